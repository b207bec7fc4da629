"""Node-local staging on the real local Slurm: two nodes train from their own verified copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import tiny_spec, wait_final, xv
from xvhpc.data.stage import READY

pytestmark = pytest.mark.e2e


@pytest.mark.slurm
def test_two_nodes_train_from_their_own_copies(slurm_up, tmp_path: Path, demo_data: Path) -> None:
    """local-slurm declares /tmp/xvhpc-node-local/$SLURMD_NODENAME: one directory per node."""
    spec = tiny_spec(
        tmp_path / "spec.yaml",
        demo_data,
        name="slurm-stage",
        data={"stage": "node_local"},
        resources={"nodes": 2, "processes_per_node": 1, "walltime": "00:10:00"},
    )
    run = tmp_path / "run"
    xv("submit", str(spec), "--site", "local-slurm", "--out", str(run))
    states = wait_final(run)
    assert {k: v["state"] for k, v in states.items()} == dict.fromkeys(
        ["ingest", "merge", "train", "evaluate", "report"], "COMPLETED"
    )
    token = json.loads((run / "plan.json").read_text())["stage_dir"].rsplit("/", 1)[1]
    for node in ("n1", "n2"):
        copy = Path("/tmp/xvhpc-node-local") / node / token
        assert (copy / READY).is_file(), f"{node} has no staged copy"
        assert len(list(copy.glob("*.h5"))) == 2
    log = "".join(p.read_text() for p in (run / "logs").glob("train-*.out"))
    assert log.count("staged shards to /tmp/xvhpc-node-local/") == 2
    assert "reading shards from the node-local copy" in log
