"""Walltime/preemption signals that arrive before training is ready to checkpoint.

LSF signals every process of a job at its run limit (SIGUSR2), Slurm and preemption send
SIGUSR1/SIGTERM: one that lands while torch is still importing would kill the rank outright.
``hold()`` runs first thing in ``xvhpc train`` and remembers such a signal; the training loop's
stop flag picks it up and checkpoints at its first iteration.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

_held: list[int] = []  # signals that came before the training loop installed its own handler


def _remember(signum: int, frame: FrameType | None) -> None:
    _held.append(signum)


def hold() -> None:
    """Remember stop signals from now on instead of dying of them."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _remember)


def held() -> int | None:
    """The first stop signal that arrived while held, if any."""
    return _held[0] if _held else None
