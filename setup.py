"""Build hook only (the project is configured in pyproject.toml): bake the git commit into the
built package as ``xvhpc/_commit.txt``, so ``xvhpc --version`` of an installed wheel names the
commit it was built from (a wheel has no git checkout to ask at run time)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithCommit(build_py):
    """``build_py`` plus ``_commit.txt`` (empty outside a git checkout, e.g. from an sdist)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install asks git at run time instead
            return
        head = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(HERE), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        )
        commit = head.stdout.strip() if head.returncode == 0 else ""
        if commit and dirty.stdout.strip():
            commit += "+dirty"
        target = Path(self.build_lib) / "xvhpc" / "_commit.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(commit + "\n")
        # the shipped site configs travel inside the package (xvhpc sites from a wheel)
        sites = target.parent / "site_configs"
        sites.mkdir(exist_ok=True)
        for config in sorted((HERE / "site_configs").glob("*.yaml")):
            (sites / config.name).write_bytes(config.read_bytes())


setup(cmdclass={"build_py": BuildPyWithCommit})
