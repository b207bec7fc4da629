"""Every registered task on the real local Slurm: its own synthetic data, an ingest array, DDP
training over two nodes (srun, gloo), evaluate and report. A new task folder is covered here
with no edit (the tasks come from the registry, the data and spec from the contract suite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import wait_final, xv
from tests.contract.test_tasks import TASKS, _spec, _synth
from xvhpc.registry import task_info

pytestmark = pytest.mark.e2e


@pytest.mark.slurm
@pytest.mark.parametrize("name", TASKS)
def test_every_task_trains_over_two_slurm_nodes(slurm_up, name: str, tmp_path: Path) -> None:
    """Both ranks run under Slurm and end with the same weights; the validation rounds and the
    scored point carry the task's own metric names; each round scored the whole validation
    split (both ranks' halves gathered: the count evaluate scores too)."""
    info = task_info(name)
    source = _synth(name, tmp_path / "data")
    spec = _spec(name, tmp_path / "spec.yaml", source)
    raw = yaml.safe_load(spec.read_text())
    raw["data"]["shards"] = 2
    raw["resources"] = {"nodes": 2, "processes_per_node": 1, "walltime": "00:10:00"}
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    run = tmp_path / "run"
    xv("submit", str(spec), "--site", "local-slurm", "--out", str(run))
    states = wait_final(run)
    assert {k: v["state"] for k, v in states.items()} == dict.fromkeys(
        ["ingest", "merge", "train", "evaluate", "report"], "COMPLETED"
    )
    ranks = [json.loads(p.read_text()) for p in sorted((run / "train/0/ranks").glob("*.json"))]
    assert [r["environment"] for r in ranks] == ["slurm", "slurm"]
    assert len({r["weights_sha256"] for r in ranks}) == 1
    rounds = [json.loads(x) for x in (run / "train/0/metrics.jsonl").read_text().splitlines()]
    assert any(info.selection in r for r in rounds), rounds[-1]
    metrics = json.loads((run / "eval" / "0" / "metrics.json").read_text())
    assert metrics["task"] == name and info.rank_by[0] in metrics
    counts = [r["val_samples"] for r in rounds if info.selection in r]
    assert counts and len(set(counts)) == 1 and counts[0] > 0, counts
    # where evaluate scores the records validation scores (not an action's clips vs videos)
    scored = next((metrics[k] for k in ("images", "samples") if type(metrics.get(k)) is int), None)
    assert scored is None or counts[0] == scored, (counts, scored)
