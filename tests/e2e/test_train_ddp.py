"""Real DDP training: two ranks under torchrun and under mpirun agree on their weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require
from tests.unit.pipeline.test_train import check_ranks, fresh

pytestmark = pytest.mark.e2e


def test_ddp_under_torchrun(ingested: Path) -> None:
    run = fresh(ingested)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "xvhpc",
            "train",
            "--run-dir",
            str(run),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_ranks(run, 2, "torchrun")


def test_ddp_under_mpirun(ingested: Path) -> None:
    require("mpirun", "Open MPI launcher tests")
    run = fresh(ingested)
    argv = [
        "mpirun",
        "--allow-run-as-root",
        "--oversubscribe",
        "-n",
        "2",
        "-x",
        "OMP_NUM_THREADS=1",
        "-x",
        "PATH",
        sys.executable,
        "-m",
        "xvhpc",
        "train",
        "--run-dir",
        str(run),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    check_ranks(run, 2, "openmpi")
