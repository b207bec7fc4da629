"""Small helpers shared by both sides: atomic writes, JSON I/O, durations."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


class UserError(Exception):
    """A failure the user can act on (bad input, a busy run directory, a damaged or missing
    file): ``xvhpc`` prints ``xvhpc: error: <message>`` and exits with ``code``, no traceback."""

    code = 2


class CorruptFile(UserError, ValueError):
    """A JSON file of a run directory that does not parse (``str()`` names it)."""


def umask() -> int:
    """The process umask, read without changing it where Linux shows it (no race with threads)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    The file gets the mode any new file gets (0666 less the umask), not mkstemp's 0600:
    group members share run directories."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def replace_dir(staged: Path, target: Path) -> None:
    """Put a fully written ``staged`` directory at ``target`` (old one renamed away, then removed)."""
    import shutil

    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staged.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike[str], text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` through a temp file and rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        if mode is not None:  # e.g. 0o755 for scripts, less the umask as for any new file
            tmp.chmod(mode & ~umask())


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike[str], default: Any = None) -> Any:
    """Read JSON from ``path``; return ``default`` when the file does not exist. A file that is
    not JSON is a ``CorruptFile`` naming it (a clear error, not a traceback)."""
    try:
        return json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        return default
    except ValueError as exc:  # not UTF-8, not JSON
        raise CorruptFile(
            f"{path} is damaged (not valid JSON: {exc}); restore it, or delete it and rerun the "
            "step that writes it"
        ) from None


def sha256_file(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?$")


def parse_walltime(text: str) -> int:
    """``[D-]HH:MM[:SS]`` → seconds. Raises ValueError with the accepted forms."""
    match = _WALLTIME.match(str(text).strip())
    if not match:
        raise ValueError(f"walltime {text!r} is not [D-]HH:MM[:SS] (e.g. '02:00:00' or '1-12:00')")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    if minutes > 59 or seconds > 59:
        raise ValueError(f"walltime {text!r}: minutes and seconds must be below 60")
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def format_hms(seconds: int) -> str:
    """Seconds → ``HH:MM:SS`` (hours may exceed 24)."""
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def safe_label(text: str, limit: int = 48) -> str:
    """A scheduler-safe label (job names): letters, digits, ``_.-`` only."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-") or "job"
    return cleaned[:limit]


_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """'a FIFO', 'a character device' … for a mode that is not a regular file (reading a FIFO
    or a device would block or never end: catalog and decode name it and skip the file)."""
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def open_regular(path: Path, flags: int, what: str = "a file xvhpc writes") -> int:
    """``os.open`` that never follows a link at ``path`` and never blocks on a FIFO there, and
    returns only a regular file: a member of a shared run directory could otherwise point one
    of its files at a file of the owner's, which xvhpc would write. Else a ``UserError``."""
    nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | nofollow | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise UserError(
                f"{path} is a symbolic link; {what} must be a regular file (xvhpc never "
                "writes through a link): remove it and rerun"
            ) from None
        if exc.errno in (errno.ENXIO, errno.EISDIR) or (path.exists() and not path.is_file()):
            raise UserError(f"{path} is not a regular file; remove it and rerun") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UserError(
            f"{path} is not a regular file ({file_kind(info.st_mode)}); {what} must be one: "
            "remove it and rerun"
        )
    return fd


def open_append(path: Path, binary: bool = False) -> IO[Any]:
    """A log opened for appending (created if missing) through ``open_regular``."""
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a log xvhpc appends to")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "ab" if binary else "a")


def at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer ≥ ``low`` (and ≤ ``high``), with a message that says so."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value} is above {high}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse
