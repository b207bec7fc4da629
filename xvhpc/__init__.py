"""xvhpc: Visual-Insights-style image classification pipelines for HPC clusters.

The login-node side (``spec``, ``plan``, ``schedulers``, ``launchers``, ``submit``) never
imports torch; the compute-node side (``data``, ``models``, ``runtime``, ``steps``, ``serve``)
does the work inside jobs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__version__ = "0.1.0"


def commit() -> str | None:
    """The git commit this copy of xvhpc was built from, so a bug report or a run's provenance
    names the exact code: ``_commit.txt``, written into wheels by ``setup.py`` at build time,
    else (an editable install, a checkout on PYTHONPATH) asked of git in the checkout that holds
    this package (``+dirty`` when tracked files differ from the commit). None when neither."""
    here = Path(__file__).resolve().parent
    baked = here / "_commit.txt"
    if baked.is_file():
        return baked.read_text().strip() or None
    git = ["git", "-C", str(here.parent)]
    try:
        top = subprocess.run([*git, "rev-parse", "--show-toplevel"], capture_output=True, text=True)
        if top.returncode or Path(top.stdout.strip()).resolve() != here.parent:
            return None  # not the top of a checkout: e.g. site-packages inside a repo's .venv
        head = subprocess.run(
            [*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
    except OSError:  # no git on this machine
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def version_text() -> str:
    """``0.1.0 (commit 1a2b3c4d5e6f)``: what ``xvhpc --version`` prints."""
    return f"{__version__} (commit {commit() or 'unknown'})"
