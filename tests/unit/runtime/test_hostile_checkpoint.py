"""Faults, second pass (issue 23): a disk that fills while a checkpoint is written is one line and leaves
nothing behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI


def test_disk_full_during_a_checkpoint_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """Finding 11: a checkpoint written to a full filesystem (a real 8 MB tmpfs) is an
    OSError(ENOSPC) naming the file, which the CLI prints as one line; no temp file is left."""
    import errno

    import torch

    from xvhpc.runtime.checkpoint import save_checkpoint

    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        message = f"cannot mount a small tmpfs here ({mounted.stderr.strip()})"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    try:
        with pytest.raises(OSError) as info:
            save_checkpoint(small / "checkpoint.pt", {"model": {"w": torch.zeros(4_000_000)}})
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(
            small / "checkpoint.pt"
        )
        assert list(small.iterdir()) == []
    finally:
        import gc

        info = None  # the failed writer's file handle lives in the traceback: let it go
        gc.collect()
        done = subprocess.run(["umount", "-l", str(small)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
