"""The repository itself: no stray files in its root (job logs, scratch output)."""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT

ALLOWED = {
    ".ci",
    ".git",
    ".gitignore",
    "CHANGELOG.md",
    "README.md",
    "benchmarks",
    "docs",
    "envs",
    "jobs",
    "mkdocs.yml",
    "ood",  # the Open OnDemand batch-connect app (ood/xvhpc-ui/)
    "pyproject.toml",
    "scripts",
    "setup.py",
    "site_configs",
    "tests",
    "third_party",
    "xvhpc",
}


def test_no_stray_files_in_the_repo_root() -> None:
    """A `slurm-68.out` committed by accident (sbatch run from the root) fails here."""
    entries = sorted(p.name for p in ROOT.iterdir())
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *entries],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    stray = sorted(set(entries) - ALLOWED - set(ignored))
    assert not stray, (
        f"stray files in the repository root: {stray} (move, delete or .gitignore them)"
    )


def test_the_package_is_typed() -> None:
    assert (ROOT / "xvhpc" / "py.typed").is_file()
