"""The command line: every verb has --help; login-side verbs never import torch; local run + resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, tiny_spec, xv
from xvhpc.cli import build_parser

VERBS = sorted(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb: str) -> None:
    proc = xv(verb, "--help")
    assert proc.stdout.startswith("usage: xvhpc " + verb)


def test_login_side_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from xvhpc.cli import main; "
        f"main(['validate', {str(ROOT / 'jobs/covid_xray.yaml')!r}, '--site', 'summit']); "
        f"main(['compile', {str(ROOT / 'jobs/covid_sweep.yaml')!r}, '--site', 'summit', '--out', {str(tmp_path / 'r')!r}]); "
        "main(['sites']); "
        "heavy = [m for m in ('torch', 'torchvision', 'h5py', 'pydicom', 'matplotlib') if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stdout


def test_local_run_end_to_end_then_rerun_skips(tmp_path: Path, demo_data: Path) -> None:
    spec = tiny_spec(
        tmp_path / "spec.yaml",
        demo_data,
        resources={"processes_per_node": 2},
        train={"max_iterations": 6, "val_every": 3},
    )
    run = tmp_path / "run"
    first = xv("run", str(spec), "--out", str(run))
    assert (
        "== train" in first.stdout
        and (run / "report.html").exists()
        and (run / "model" / "meta.json").exists()
    )
    ranks = sorted((run / "train" / "0" / "ranks").glob("*.json"))
    assert [json.loads(p.read_text())["environment"] for p in ranks] == ["torchrun", "torchrun"]
    again = xv("run", str(spec), "--out", str(run))
    assert again.stdout.count("already completed, skipping") == 4
    status = xv("status", str(run))
    assert status.stdout.count("COMPLETED") == 4


def test_local_run_failure_is_resumable(tmp_path: Path, demo_data: Path) -> None:
    spec = tiny_spec(tmp_path / "spec.yaml", tmp_path / "missing-data")
    proc = xv("run", str(spec), "--out", str(tmp_path / "run"), check=False)
    assert proc.returncode != 0 and "does not exist" in proc.stdout + proc.stderr
    assert "Rerun the same command to continue" in proc.stderr
    status = xv("status", str(tmp_path / "run"), check=False)
    assert status.returncode == 1 and "FAILED" in status.stdout


def test_clear_errors_for_missing_or_broken_run_dirs(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    for argv in (
        ["status", str(missing)],
        ["serve", str(missing)],
        ["export", str(missing)],
        ["train", "--run-dir", str(missing)],
    ):
        proc = xv(*argv, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr and "error" in proc.stderr, (
            argv,
            proc.stderr,
        )
