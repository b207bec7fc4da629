"""Hostile input, second pass (issue 23, finding 3): nothing is written through a link or a FIFO at a
lock path (xvhpc/lock.py). Real locks; pytest-timeout only turns a hang into a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xvhpc.lock import hold, waiting
from xvhpc.util import UserError


@pytest.mark.timeout(30)
def test_symlinked_lock_file_does_not_clobber_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("line1 precious data\nline2\n")
    locks = tmp_path / "run" / "locks"
    locks.mkdir(parents=True)
    os.symlink(victim, locks / "run.lock")
    for enter in (
        lambda: hold(locks / "run.lock", "xvhpc compile"),
        lambda: waiting(locks / "run.lock"),
    ):
        with pytest.raises(UserError, match="symbolic link"):
            with enter():
                pass
    assert victim.read_text() == "line1 precious data\nline2\n"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("shared", [False, True])
def test_fifo_at_the_lock_path_is_a_clear_error(tmp_path: Path, shared: bool) -> None:
    locks = tmp_path / "run" / "locks"
    locks.mkdir(parents=True)
    os.mkfifo(locks / "run.lock")
    with pytest.raises(UserError, match=r"not a regular file \(a FIFO\)"):
        with hold(locks / "run.lock", "xvhpc ingest", shared=shared):
            pass
