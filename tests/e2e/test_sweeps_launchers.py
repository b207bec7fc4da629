"""Studies under real launchers: a TPE study as a real Slurm job array, and a study slot under torchrun
with two ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import xv
from tests.unit.sweeps.test_sweeps import ENV, states, study_spec

pytestmark = pytest.mark.e2e


@pytest.mark.slurm
@pytest.mark.timeout(2400)  # 6 + 6 array tasks on two shared cores
def test_tpe_study_on_the_real_local_slurm_and_a_resubmit_repeats_none(
    slurm_up, tmp_path: Path, demo_data: Path
) -> None:
    """The study as a real Slurm job array (%2): six tasks ask one journal file from the
    emulated compute nodes; a second `xvhpc submit` of the same run dir trains no trial again."""
    from tests.conftest import wait_final

    spec = study_spec(tmp_path / "spec.yaml", demo_data, 6, [0.001, 0.003, 0.01, 0.03])
    run = tmp_path / "run"
    xv("submit", str(spec), "--site", "local-slurm", "--out", str(run))
    assert "#SBATCH --array=0-5%2" in (run / "scripts" / "train.sbatch").read_text()
    jobs = wait_final(run, timeout=2000)
    assert all(v["state"] == "COMPLETED" for v in jobs.values()), jobs
    first = states(run)
    assert len(first) == 6 and sorted(slot for _, _, slot in first) == list(range(6))
    assert {state for _, state, _ in first} <= {"COMPLETE", "PRUNED"}
    assert "trials 6/6 finished" in xv("status", str(run)).stdout

    xv("submit", str(spec), "--site", "local-slurm", "--out", str(run))
    jobs = wait_final(run, timeout=2000)
    assert all(v["state"] == "COMPLETED" for v in jobs.values()), jobs
    assert states(run) == first, "a resubmit asked for or changed a trial"
    logs = "".join(p.read_text() for p in (run / "logs").glob("train*"))
    assert logs.count("trial already finished; nothing to train") == 6


@pytest.mark.timeout(1200)  # two shared cores: process starts are slow
def test_a_study_slot_under_torchrun_two_ranks_gets_one_trial_and_stops_together(
    tmp_path: Path, demo_data: Path
) -> None:
    """Rank 0 alone asks the study; rank 1 receives the trial's parameters, and both leave the
    loop at the same early-stop decision (a rank left behind would hang in the next collective)."""
    spec = study_spec(tmp_path / "spec.yaml", demo_data, 1, [0.01], prune={"method": "none"})
    data = yaml.safe_load(spec.read_text())
    # 12 validation images: accuracy cannot rise strictly 20 rounds in a row, so patience 1
    # on val_accuracy must stop the run early
    stop = {"metric": "val_accuracy", "patience": 1}
    data["train"] = {**data["train"], "max_iterations": 40, "early_stop": stop}
    spec.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    xv("compile", str(spec), "--out", str(run), cwd=tmp_path)
    xv("ingest", "--run-dir", str(run), "--shard", "all", "--merge", env=ENV)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    proc = subprocess.run(
        [*argv, "-m", "xvhpc", "train", "--run-dir", str(run), "--point", "0"],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(n, s) for n, s, _ in states(run)] == [(0, "COMPLETE")]
    ranks = [
        json.loads((run / "train" / "0" / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)
    ]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    progress = json.loads((run / "train" / "0" / "progress.json").read_text())
    assert progress["world_size"] == 2
    assert progress["state"] == "stopped_early"
    assert progress["iteration"] < 40
