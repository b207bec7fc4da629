"""Run-directory locks: a second xvhpc process that would write the same part of a run
directory is refused at once, with who holds it, instead of the two crashing one another.

Locks are POSIX record locks (``fcntl.lockf``) on files under ``RUN_DIR/locks/``: the kernel
drops them when the holder exits, however it exits (``kill -9`` included), and they work
across nodes on the shared filesystems HPC centres use (NFS through its lock manager, GPFS,
Lustre mounted with ``flock``). Where a filesystem refuses locks (``ENOLCK``, Lustre without
``flock``), xvhpc warns once and runs unlocked. Nothing waits (but ``waiting``'s one-time
setups): a busy lock is an error.

What is locked, and by whom (a process that would not write takes nothing):

* ``run`` — ``xvhpc run`` holds it exclusively for the whole pipeline; ``compile``/``submit``
  while they write the scripts and plan. Every job step (``ingest``, ``train``) holds it
  *shared*, so steps of one pipeline run side by side while a recompile or a second
  ``xvhpc run`` of the same run directory is refused. The steps that ``xvhpc run`` starts
  itself inherit its hold through ``XVHPC_LOCK_TOKEN`` (the token is in the lock file).
* ``ingest`` — ``--shard all`` holds it exclusively (it writes every shard; under MPI rank 0
  holds it for all ranks); an array task (``--shard N``) and ``--merge`` hold it shared plus
  ``shard-N`` / ``merge`` exclusively: array tasks writing different shards never block each
  other, two writers of one shard (a rerun beside a live array task) do.
* ``train-P`` — the one process that writes point P (rank 0) holds it exclusively; the other
  ranks of the same job take nothing, so a job never refuses its own ranks.
* ``mlruns`` — ``waiting``: the first task with ``train.track: mlflow`` makes the MLflow
  store while the others wait for it (milliseconds).

Not covered: a re-ingest of shards while training reads them is not refused (each is a
different lock); the sha256 check before training reads a shard catches a shard that changed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from .rundir import BUSY_EXIT, Layout
from .runtime.whoami import launcher_rank
from .util import UserError, open_regular

TOKEN_ENV = "XVHPC_LOCK_TOKEN"
_RECORD = 512  # bytes: the holder record is written in place, padded, never truncated


class RunDirBusy(UserError):
    """Another process holds a lock this one needs."""

    code = BUSY_EXIT


_held: dict[str, tuple[int, int]] = {}  # lock path → (fd, depth): re-entrant within a process
_warned = False


def launch_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank under a launcher (0 outside one). Read from the environment only,
    before any process group exists, so that only rank 0 of a training job takes its lock."""
    return launcher_rank(env)[0]


def _open_lock(path: Path, flags: int) -> int:
    """Open a lock file without following a link and without blocking on a FIFO: a member of
    the group could otherwise point ``run.lock`` at a file of the owner's, which xvhpc would
    overwrite with its record. A link, FIFO, device or folder there is a clear error."""
    return open_regular(path, flags, "a lock file")


def _record(path: Path) -> object:
    """The holder record in a lock file (at most one record's bytes, links not followed)."""
    try:
        fd = _open_lock(path, os.O_RDONLY)
    except (OSError, UserError):
        return {}
    try:
        raw = os.pread(fd, _RECORD * 2, 0)
    except OSError:
        return {}
    finally:
        os.close(fd)
    try:
        return json.loads(raw.decode("utf-8", "replace").strip() or "{}")
    except ValueError:
        return {}


def _describe(path: Path) -> str:
    record = _record(path)
    if not isinstance(record, dict) or "pid" not in record:
        return "another process (its record is unreadable)"
    return (
        f"`{record.get('command', 'xvhpc')}` (pid {record.get('pid')} on host "
        f"{record.get('host', '?')}, since {record.get('since', '?')})"
    )


def _inherited(path: Path, env: Mapping[str, str]) -> bool:
    """True when ``path`` is held by the ``xvhpc run`` that started this process."""
    if str(path) in _held:  # this process holds it (never reopen it: that would drop it)
        return True
    token = env.get(TOKEN_ENV)
    if not token:
        return False
    record = _record(path)
    return isinstance(record, dict) and record.get("token") == token


def _lock_unsupported(exc: OSError) -> bool:
    return exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@contextlib.contextmanager
def hold(
    path: Path, command: str, shared: bool = False, token: str | None = None
) -> Iterator[None]:
    """Hold the lock file ``path`` (exclusive, or ``shared``) for the ``with`` block; refuse at
    once with ``RunDirBusy`` naming the holder. Re-entrant within one process."""
    global _warned
    key = str(path)
    if key in _held:  # POSIX locks belong to the process: a second fd would drop the first
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            _held[key] = (fd, _held[key][1] - 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    writable = True
    try:
        fd = _open_lock(path, os.O_RDWR | os.O_CREAT)
    except PermissionError:
        if not shared:  # an exclusive lock needs a writable file (and so does the step)
            raise
        fd = _open_lock(path, os.O_RDONLY)  # another member's file: reading is enough
        writable = False
    locked = True
    try:
        fcntl.lockf(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            os.close(fd)
            raise RunDirBusy(
                f"{path.parent.parent} is in use: {path.name} is held by {_describe(path)}; "
                "wait for it to finish or stop it (a lock of a process that died is released "
                "by the system)"
            ) from None
        if not _lock_unsupported(exc):
            os.close(fd)
            raise
        locked = False
        if not _warned:
            _warned = True
            print(
                f"xvhpc: warning: file locks are not supported under {path.parent} "
                f"({exc.strerror}); two processes writing this run directory are not prevented",
                file=sys.stderr,
            )
    try:
        if locked and writable:
            record = {
                "command": command,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "token": token,
            }
            text = json.dumps(record)[: _RECORD - 1].ljust(_RECORD - 1) + "\n"
            os.pwrite(fd, text.encode(), 0)
        _held[key] = (fd, 1)
        yield
    finally:
        _held.pop(key, None)
        os.close(fd)  # releases the lock


def _command(argv: list[str] | None = None) -> str:
    words = (argv if argv is not None else sys.argv[1:])[:8]
    return " ".join(["xvhpc", *words])[:200]


@contextlib.contextmanager
def exclusive_run(root: Path, argv: list[str] | None = None) -> Iterator[None]:
    """``xvhpc run``/``compile``/``submit``: the whole run directory, exclusively. The token
    it writes is exported, so the steps it starts share its hold instead of being refused."""
    path = Layout(Path(root)).lock("run")
    if _inherited(path, os.environ):  # held by this process, or by the `xvhpc run` above it
        yield
        return
    token = secrets.token_hex(16)
    with hold(path, _command(argv), token=token):
        previous = os.environ.get(TOKEN_ENV)
        os.environ[TOKEN_ENV] = token
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(TOKEN_ENV, None)
            else:
                os.environ[TOKEN_ENV] = previous


@contextlib.contextmanager
def step(
    root: Path, parts: list[tuple[str, bool]], argv: list[str] | None = None
) -> Iterator[None]:
    """A job step: the run shared (unless its ``xvhpc run`` holds it) plus ``parts``, each
    ``(name, shared)``. Nothing is locked in a folder that is not a compiled run directory
    (the step itself then says so)."""
    layout = Layout(Path(root))
    if not layout.plan.is_file():
        yield
        return
    command = _command(argv)
    with contextlib.ExitStack() as stack:
        run_lock = layout.lock("run")
        if not _inherited(run_lock, os.environ):
            stack.enter_context(hold(run_lock, command, shared=True))
        for name, shared in parts:
            stack.enter_context(hold(layout.lock(name), command, shared=shared))
        yield


@contextlib.contextmanager
def waiting(path: Path) -> Iterator[None]:
    """Hold ``path`` exclusively for a short one-time setup that concurrent tasks would race on,
    waiting for it instead of refusing (unlocked where the filesystem has no locks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock(path, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if not _lock_unsupported(exc):
                raise
        yield
    finally:
        os.close(fd)  # releases the lock
