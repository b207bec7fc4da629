"""Object detection on the real local Slurm: ingest array, DDP training over two nodes, evaluate, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import xv
from tests.unit.tasks.detect.test_detect import _detect_spec

pytestmark = pytest.mark.e2e


@pytest.mark.slurm
def test_detection_pipeline_on_two_slurm_nodes(slurm_up, tmp_path: Path, shapes: Path) -> None:
    """The same spec on the real local Slurm: ingest array, DDP training over two nodes (srun;
    validation gathers both ranks' detections), evaluate and report."""
    from tests.conftest import wait_final

    spec = _detect_spec(tmp_path / "spec.yaml", shapes, max_iterations=12, val_every=6)
    raw = json.loads(spec.read_text())
    raw["data"]["shards"] = 2
    raw["resources"] = {"nodes": 2, "processes_per_node": 1, "walltime": "00:10:00"}
    spec.write_text(json.dumps(raw))
    run = tmp_path / "run"
    xv("submit", str(spec), "--site", "local-slurm", "--out", str(run))
    states = wait_final(run)
    assert {k: v["state"] for k, v in states.items()} == dict.fromkeys(
        ["ingest", "merge", "train", "evaluate", "report"], "COMPLETED"
    )
    ranks = [json.loads(p.read_text()) for p in sorted((run / "train/0/ranks").glob("*.json"))]
    assert [r["environment"] for r in ranks] == ["slurm", "slurm"]
    assert len({r["weights_sha256"] for r in ranks}) == 1
    metrics = json.loads((run / "eval" / "0" / "metrics.json").read_text())
    assert metrics["task"] == "detect" and metrics["images"] == 26
    validation = [json.loads(x) for x in (run / "train/0/metrics.jsonl").read_text().splitlines()]
    assert [v["val_samples"] for v in validation if "val_map" in v] == [26, 26]  # both ranks'
