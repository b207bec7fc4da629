"""A fresh clone with nothing beside it (no ``../shared``): what ``.ci/run`` needs before its
first test is inside the repository, and the suite collects without the real X-rays."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

TARBALL = "third_party/openlava/openlava-4.0dev4-69891d86.tar.gz"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``git clone`` of this checkout's HEAD into an empty folder: committed files only."""
    where = tmp_path_factory.mktemp("fresh") / "xvhpc"
    subprocess.run(
        ["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(where)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert not (where.parent / "shared").exists()
    return where


def _env(clone: Path) -> dict[str, str]:
    """This venv's Python with the clone's package first: no new environment to install."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XVHPC_OPENLAVA")}
    return {**env, "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1"}


def test_openlava_source_is_found_and_verified_in_the_clone(clone: Path) -> None:
    """``scripts/openlava.sh source`` finds the committed tarball and checks its sha256."""
    proc = subprocess.run(
        ["bash", "scripts/openlava.sh", "source"],
        cwd=clone,
        env=_env(clone),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Path(proc.stdout.strip()) == clone / TARBALL
    assert (clone / "third_party/openlava/COPYING").read_text().count("GNU GENERAL PUBLIC") >= 1


def test_a_damaged_openlava_tarball_is_refused(clone: Path, tmp_path: Path) -> None:
    """One flipped byte: the lookup fails and names the mismatch instead of building it."""
    damaged = tmp_path / Path(TARBALL).name
    data = bytearray((clone / TARBALL).read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    proc = subprocess.run(
        ["bash", "scripts/openlava.sh", "source"],
        cwd=clone,
        env={**_env(clone), "XVHPC_OPENLAVA_TARBALL": str(damaged)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "sha256 mismatch" in proc.stdout
    assert hashlib.sha256(bytes(data)).hexdigest() in proc.stdout


def test_the_suite_collects_in_the_clone_without_the_data(clone: Path) -> None:
    """``pytest --collect-only`` in the clone: the real X-ray tests listed
    (no collection error), and the X-ray tests skipped with their one-line reason when run."""
    run = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    collected = subprocess.run(
        [*run, "--collect-only", "-q"],
        cwd=clone,
        env=_env(clone),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert "error" not in collected.stdout.splitlines()[-1].lower(), collected.stdout[-2000:]
    assert (
        "tests/unit/pipeline/test_ingest.py::test_real_chest_xrays_through_csv" in collected.stdout
    )
    skipped = subprocess.run(
        [
            *run,
            "-rs",
            "-q",
            "tests/unit/pipeline/test_ingest.py",
            "tests/unit/pipeline/test_evaluate.py",
            "-k",
            "real_",
        ],
        cwd=clone,
        env=_env(clone),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert skipped.returncode == 0, skipped.stdout[-3000:]
    assert "needs the real chest X-rays" in skipped.stdout
    assert " passed" not in skipped.stdout and " failed" not in skipped.stdout


def test_a_wheel_built_from_the_clone_names_its_commit(clone: Path, tmp_path: Path) -> None:
    """``pip wheel .`` (not editable): the installed package runs from outside any checkout
    and ``--version`` names the commit it was built from (baked in by setup.py)."""
    head = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), "."],
        cwd=clone,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("xvhpc-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = [sys.executable, "-m", "xvhpc"]
    where = subprocess.run(
        [sys.executable, "-c", "import xvhpc; print(xvhpc.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr
    version = subprocess.run(
        [*run, "--version"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert version.stdout.strip() == f"xvhpc 0.1.0 (commit {head})", version
    ok = subprocess.run(
        [*run, "validate", str(clone / "jobs" / "demo.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    sites = subprocess.run(
        [*run, "sites"], cwd=tmp_path, env=env, capture_output=True, text=True
    ).stdout
    assert {"summit", "perlmutter", "x86-v100"} <= {line.split()[0] for line in sites.splitlines()}
