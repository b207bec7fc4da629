"""Load ``.pt`` files (checkpoints, bundle weights, cached weights) without running any code.

``torch.load(weights_only=False)`` unpickles: a file dropped into a run dir (group-writable on a
shared filesystem) would run its payload on resume, evaluate, serve or export. Every xvhpc
``.pt`` holds only tensors, dicts, lists, tuples and plain numbers/strings, which
``weights_only=True`` loads on torch 2.0.1 and later without any allowlisting API.

Torch is imported inside the function, so the login side (``cli.main`` catches
``UnloadableFile``) imports this module without paying for torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


class UnloadableFile(Exception):
    """A checkpoint or model file that does not load; ``str()`` names the file and why."""


def load_tensors(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; any failure is an ``UnloadableFile`` naming it."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise UnloadableFile(f"{path}: no such file")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle before refusing it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnloadableFile(
            f"{path}: refused: it holds something other than tensors and plain data "
            f"({_refused_part(exc)}); xvhpc never unpickles objects (they could run code). "
            "Delete or replace the file"
        ) from None
    except Exception as exc:  # truncated zip, random bytes, a directory race: all "unreadable"
        raise UnloadableFile(
            f"{path}: not a readable PyTorch file (corrupt or truncated?): "
            f"{type(exc).__name__}: {_first_line(exc)}. Delete or replace the file"
        ) from None


def _refused_part(exc: BaseException) -> str:
    """What torch's unpickler refused (e.g. ``Unsupported global: GLOBAL io.open``), without
    its advice to retry with ``weights_only=False`` — the one thing not to do here."""
    _, _, detail = str(exc).partition("WeightsUnpickler error:")
    lines = [ln.strip() for ln in detail.splitlines() if ln.strip()]
    if not lines:
        return "not a PyTorch state"
    return lines[0].split(" was not an allowed")[0].rstrip(".")[:200]


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """Torch's messages run to many lines of advice that does not apply here: keep the first."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
