"""Training checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors, dicts, lists, plain numbers and None: the model, optimizer,
scheduler and scaler state dicts, the iteration and the best selection metric
(``TaskInfo.selection``; None before the first validation), and the random states of torch,
numpy and Python (numpy's and Python's as int64 tensors and numbers, not the tuples and arrays
``get_state`` returns, which ``weights_only`` refuses). A file that does not load, or
lacks a key, is an ``UnloadableFile`` naming it; nothing in it is ever executed.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.safeload import UnloadableFile, load_tensors
from ..util import atomic_path

REQUIRED = ("model", "optimizer", "scheduler", "scaler", "iteration", "best", "rng")


def rng_state() -> dict[str, Any]:
    """torch, numpy and Python random states as tensors and numbers."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "rng": torch.get_rng_state(),
        "numpy_rng": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python_rng": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss_next,
        },
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Set the random states ``rng_state`` captured (a checkpoint from before numpy and Python
    states were saved restores torch's only, as it always did)."""
    torch.set_rng_state(state["rng"].cpu())
    if "numpy_rng" in state:
        np_state = state["numpy_rng"]
        keys = np_state["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state(
            ("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["gauss"])
        )
    if "python_rng" in state:
        py_state = state["python_rng"]
        internal = tuple(int(x) for x in py_state["state"].tolist())
        random.setstate((py_state["version"], internal, py_state["gauss"]))


# less free space than this after a failed write: the disk was full (a checkpoint is ≥ MBs)
WRITE_MARGIN = 64 * 2**20


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus the random states) atomically: a kill leaves the old file whole.
    A failed write (torch.save says ``unexpected pos`` or ``iostream error`` when the disk is
    full) is an OSError naming the file, so the step prints one line and a rerun resumes from
    the checkpoint before it."""
    try:
        with atomic_path(path) as tmp:
            torch.save({**state, **rng_state()}, tmp)
    except RuntimeError as exc:
        full = shutil.disk_usage(path.parent).free < WRITE_MARGIN
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(
            code, f"{os.strerror(code)} ({' '.join(str(exc).split())[:200]})", str(path)
        ) from None


def load_checkpoint(path: Path, map_location: Any) -> dict[str, Any]:
    """A checkpoint's state; ``UnloadableFile`` naming ``path`` if it is not one."""
    state = load_tensors(path, map_location=map_location)
    if not isinstance(state, dict):
        raise UnloadableFile(f"{path}: not an xvhpc checkpoint (holds a {type(state).__name__})")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise UnloadableFile(f"{path}: not an xvhpc checkpoint (no {', '.join(missing)})")
    return state


OLD_NO_BEST = -1.0  # what checkpoints before issue 21 held as ``best`` before any validation


def checkpoint_best(state: dict[str, Any]) -> float | None:
    """The best selection metric a checkpoint holds, None for none yet: written as None now,
    and as -1.0 by older checkpoints (accuracy only, where -1.0 was below any real value), so
    a min-mode metric's first validation still counts as an improvement after a resume."""
    best = state["best"]
    return None if best is None or best == OLD_NO_BEST else float(best)
