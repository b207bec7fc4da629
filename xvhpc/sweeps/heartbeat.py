"""Heartbeats of study trials: tell a live trial from one whose task died.

Optuna's journal storage has no heartbeat (only its RDB storage does), so a task killed by a
node failure or ``kill -9`` leaves its trial RUNNING for ever. Rank 0 of a slot keeps
``RUN_DIR/sweep/heartbeats/trial-N.json`` (host, pid) fresh from a daemon thread while it
trains; the file goes when the trial finishes. A RUNNING trial is *orphaned* when its file has
not been touched for ``GRACE_S`` (a dead node), or names a process on this host that is gone
(seen at once), or never came and the trial is older than ``GRACE_S`` (killed between ask and
bind). Torch-free: ``xvhpc status`` reads them.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..rundir import Layout
from ..util import write_json_atomic

INTERVAL_S = 60.0  # how often a live trial touches its file (env XVHPC_HEARTBEAT_S)
GRACE_S = 600.0  # silence taken for a dead task: clock skew, slow FS (XVHPC_HEARTBEAT_GRACE_S)


def _seconds(name: str, default: float) -> float:
    """A site may tune the heartbeat through the environment (read when used)."""
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


def heartbeat_path(root: Path, trial: int) -> Path:
    return Layout(root).heartbeat(trial)


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (tells a reused pid apart); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process holds the pid: not ours, but not provably dead
    return started is None or _process_start(pid) in (started, None)


@dataclass
class Heartbeat:
    """Rank 0's heartbeat for one trial, from ``start()`` to ``stop()``."""

    path: Path
    interval: float = field(default_factory=lambda: _seconds("XVHPC_HEARTBEAT_S", INTERVAL_S))
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self, trial: int, slot: int) -> Heartbeat:
        pid = os.getpid()
        record = {"trial": trial, "slot": slot, "host": socket.gethostname(), "pid": pid}
        write_json_atomic(self.path, {**record, "process_start": _process_start(pid)})
        threading.Thread(target=self._beat, name="xvhpc-heartbeat", daemon=True).start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                os.utime(self.path)
            except OSError:  # removed (the trial finished) or the filesystem hiccupped
                pass

    def stop(self) -> None:
        """The trial finished (or failed): its state says so, the file goes."""
        self._stop.set()
        self.path.unlink(missing_ok=True)


def orphaned(root: Path, trial: Any, now: float | None = None) -> str:
    """Why a RUNNING trial (an Optuna FrozenTrial) has no live task, or "" while it may have."""
    now = time.time() if now is None else now
    grace = _seconds("XVHPC_HEARTBEAT_GRACE_S", GRACE_S)
    path = heartbeat_path(root, trial.number)
    try:
        beat = json.loads(path.read_text())
        age = now - path.stat().st_mtime
    except (OSError, ValueError):
        beat, age = None, 0.0
    if not isinstance(beat, dict):  # missing, unreadable or damaged ([], null, text): no beat
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        if now - started > grace:
            return f"no heartbeat since it started {now - started:.0f} s ago"
        return ""
    pid = beat.get("pid")
    if isinstance(pid, int) and beat.get("host") == socket.gethostname():
        if not _alive(pid, beat.get("process_start")):
            return f"its process {pid} on {beat['host']} is gone"
    if age > grace:
        return f"no heartbeat from {beat.get('host')} for {age:.0f} s"
    return ""
