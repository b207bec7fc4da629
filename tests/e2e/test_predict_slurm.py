"""Batch prediction as a real Slurm array: identical to the local run; a cancelled task is the only one rerun."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import predict, wait_final, xv
from tests.unit.pipeline.test_predict import chunk_times

pytestmark = pytest.mark.e2e


@pytest.mark.slurm
def test_slurm_array_matches_local_and_resumes_a_cancelled_task(
    slurm_up, trained_run: Path, images: Path, local_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "slurm"
    predict(trained_run, images, out, "--site", "local-slurm")
    job = json.loads((out / "jobs.json").read_text())["steps"]["predict"]["job_id"]
    subprocess.run(["scancel", f"{job}_3"], check=True)  # one task of the array killed
    states = wait_final(out)
    if states["predict"]["state"] == "COMPLETED":
        # the task finished before the cancel reached it: lose its output instead, as a
        # task killed after writing nothing would have
        for name in ("predictions.csv", "summary.json"):
            (out / name).unlink(missing_ok=True)
        for chunk in (out / "chunks").glob("chunk-00003-*"):
            chunk.unlink()
    else:
        assert states["merge"]["state"] != "COMPLETED"  # its dependency can no longer be met
    before = chunk_times(out)
    assert [n[:11] for n in sorted(before)] == [f"chunk-0000{i}" for i in range(3)]
    predict(trained_run, images, out, "--site", "local-slurm")
    states = wait_final(out)
    assert {k: v["state"] for k, v in states.items()} == {
        "predict": "COMPLETED",
        "merge": "COMPLETED",
    }
    after = chunk_times(out)
    assert len(after) == 4 and {k: after[k] for k in before} == before
    assert (out / "predictions.csv").read_bytes() == (local_run / "predictions.csv").read_bytes()
    logs = xv("logs", str(out), "predict").stdout
    assert logs.count("already done") == 3
