"""HDF5 shards: write one atomically, read them back. One image per chunk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import h5py
import numpy as np

from ..util import atomic_path, sha256_file, write_json_atomic
from .decode import to_channels

SPLITS = {"train": 0, "val": 1, "select": 2}  # select: chooses checkpoints (data/folds.py)
# writers whose HDF5 file failed to close: never collected; the process must end with os._exit
# (HDF5's own exit handler would crash on them): cli.main does when this is not empty
BROKEN: list[ShardWriter] = []


@dataclass
class Record:
    image: np.ndarray
    label: int
    split: str
    source: str
    ops: str = ""  # "" for an original, else the augmentation ops (JSON)
    hash: str = ""  # content hash of an original (leak report), computed where it is decoded
    # what the task annotates beyond the label, for its shard writer (detection: n×5 float32
    # boxes, x0, y0, x1, y1, class)
    target: np.ndarray | None = None
    fold: int = -1  # cross-validation fold it is held out in (an augmented copy: its source's)
    dhash: str = ""  # perceptual hash of an original (near-duplicate report)


@dataclass
class ShardStats:
    index: int
    count: int = 0
    per_split_class: dict[str, dict[str, int]] = field(default_factory=dict)
    original_per_split_class: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    inputs: int = 0
    hashes: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    # per original: split, fold, label, dhash, source (folds and near-duplicates at merge)
    originals: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall-clock time writing it (status and report show images/s)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def content_hash(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


class ShardWriter:
    """Appends records to a temp HDF5 file; ``close()`` renames it into place."""

    def __init__(self, path: Path, size: int, channels: int, compression: str, batch: int = 128):
        self.path = path
        self._ctx = atomic_path(path)
        self._tmp = self._ctx.__enter__()
        self._file = h5py.File(self._tmp, "w", libver="latest", track_order=False)
        comp = None if compression == "none" else compression
        shape = (0, size, size, channels)
        self.images = self._file.create_dataset(
            "images",
            shape=shape,
            maxshape=(None, size, size, channels),
            dtype="uint8",
            chunks=(1, size, size, channels),
            compression=comp,
            track_times=False,
            # no chunk cache: each image goes to disk as it is added, so a full disk fails
            # that write (a clean OSError) rather than the close, after which HDF5 crashes
            rdcc_nbytes=0,
        )
        text = h5py.string_dtype()
        self.labels = self._file.create_dataset(
            "labels", (0,), maxshape=(None,), dtype="int16", chunks=(4096,), track_times=False
        )
        self.split = self._file.create_dataset(
            "split", (0,), maxshape=(None,), dtype="uint8", chunks=(4096,), track_times=False
        )
        self.source = self._file.create_dataset(
            "source", (0,), maxshape=(None,), dtype=text, chunks=(1024,), track_times=False
        )
        self.ops = self._file.create_dataset(
            "ops", (0,), maxshape=(None,), dtype=text, chunks=(1024,), track_times=False
        )
        self.fold = self._file.create_dataset(
            "fold", (0,), maxshape=(None,), dtype="int8", chunks=(4096,), track_times=False
        )
        self._pending: list[Record] = []
        self._batch = batch
        self._channels = channels
        self.count = 0

    def add(self, record: Record) -> None:
        """Queue one record; a one-channel image is stored with the shard's channel count."""
        if record.image.shape[2] not in (1, self._channels):
            record = dataclasses.replace(record, image=to_channels(record.image, self._channels))
        self._pending.append(record)
        if len(self._pending) >= self._batch:
            self._flush()

    def _flush(self) -> None:
        try:
            self._write_pending()
        except (RuntimeError, OSError) as exc:
            _reraise_as_os_error(exc, self._tmp)

    def _write_pending(self) -> None:
        if not self._pending:
            return
        n, start = len(self._pending), self.count
        for ds in (self.images, self.labels, self.split, self.source, self.ops, self.fold):
            ds.resize(start + n, axis=0)
        batch = np.empty((n, *self.images.shape[1:]), dtype=np.uint8)
        for i, record in enumerate(self._pending):
            if record.image.shape[2] == self._channels:
                batch[i] = record.image
            else:  # one gray channel into each channel: plain copies, cheaper than np.repeat
                for channel in range(self._channels):
                    batch[i, :, :, channel] = record.image[:, :, 0]
        self.images[start : start + n] = batch
        self.labels[start : start + n] = [r.label for r in self._pending]
        self.split[start : start + n] = [SPLITS[r.split] for r in self._pending]
        self.source[start : start + n] = [_utf8(r.source) for r in self._pending]
        self.ops[start : start + n] = [_utf8(r.ops) for r in self._pending]
        self.fold[start : start + n] = [r.fold for r in self._pending]
        self.count += n
        self._pending.clear()

    def close(self, attrs: dict[str, str]) -> None:
        try:
            self._flush()
            for key, value in sorted(attrs.items()):
                self._file.attrs[key] = value
        except BaseException:  # e.g. a full disk: the original error surfaces, the temp goes
            self.abort()
            raise
        try:
            self._file.close()
        except (RuntimeError, OSError) as exc:
            self._closed_badly()
            _reraise_as_os_error(exc, self._tmp)
        except BaseException:
            self._closed_badly()
            raise
        self._ctx.__exit__(None, None, None)

    def _closed_badly(self) -> None:
        """A close that failed (a full disk) leaves HDF5 in a state where closing again, or
        letting the object be collected, crashes the process: keep it, drop the temp file."""
        BROKEN.append(self)
        self._aborted = True
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def abort(self) -> None:
        """Drop the temp file. Idempotent; a failing close does not hide the first error."""
        if getattr(self, "_aborted", False):
            return
        self._aborted = True
        try:
            self._file.close()
        except Exception:
            BROKEN.append(self)
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def finish_shard(shard_dir: Path, stats: ShardStats, split: dict) -> dict:
    """Write the shard's sidecar JSON (after the .h5 is in place): what a resume checks.
    ``split``: the settings that decided its records' splits and folds."""
    h5 = shard_dir / shard_name(stats.index)
    info = {
        "index": stats.index,
        "split_settings": split,
        "file": h5.name,
        "count": stats.count,
        "bytes": h5.stat().st_size,
        "sha256": file_sha256(h5),
        "inputs": stats.inputs,
        "per_split_class": stats.per_split_class,
        "original_per_split_class": stats.original_per_split_class,
        "skipped": stats.skipped,
        "hashes": stats.hashes,
        "originals": stats.originals,
        "seconds": round(stats.seconds, 3),
    }
    write_json_atomic(h5.with_suffix(".json"), info)
    return info


def _reraise_as_os_error(exc: Exception, path: Path) -> NoReturn:
    """h5py reports a failed write (a full disk) as a RuntimeError or an OSError with the
    errno only in its text: raise the OSError it is, naming the file, so the CLI says it
    plainly; anything else as it was."""
    found = re.search(r"errno = (\d+)", str(exc))
    if not found:
        raise exc
    code = int(found.group(1))
    raise OSError(code, os.strerror(code), str(path)) from exc


def _utf8(text: str) -> str:
    """HDF5 strings are UTF-8: a character that cannot be encoded (a lone surrogate from a
    file name that is not UTF-8) is stored as its escape instead of failing the shard."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_digests: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime_ns) → sha256


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process for the same unchanged file (ingest checks
    a shard when it plans, writes and merges; training once per split)."""
    info = os.stat(path)
    key = (str(path), info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _digests:
        _digests[key] = sha256_file(path)
    return _digests[key]


def shard_complete(
    shard_dir: Path, index: int, split: dict | None, verify: bool = True
) -> dict | None:
    """The sidecar of a finished shard whose file is intact, else None.

    Intact: the size and (``verify``) the sha256 recorded when it was written. A shard
    changed since (a same-size overwrite, a bad disk block) counts as not done, so ingest
    writes it again instead of passing garbage on to training. So does one written under
    other split settings than ``split`` (None: not checked): its splits and folds are stale."""
    h5 = shard_dir / shard_name(index)
    side = h5.with_suffix(".json")
    if not (h5.is_file() and side.is_file()):
        return None
    try:
        info = json.loads(side.read_text())
        size = h5.stat().st_size
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON: write the shard again
        return None
    if not isinstance(info, dict) or info.get("bytes") != size:
        return None
    if split is not None and info.get("split_settings") != split:
        logging.getLogger("xvhpc").warning(
            "%s was written with split settings %s, the spec now has %s: writing it again",
            h5,
            json.dumps(info.get("split_settings")),
            json.dumps(split),
        )
        return None
    if verify and info.get("sha256") and file_sha256(h5) != info["sha256"]:
        logging.getLogger("xvhpc").warning(
            "%s does not match the sha256 recorded when it was written: writing it again", h5
        )
        return None
    return info


def clean_stale(shard_dir: Path, index: int) -> None:
    """Remove temp files a killed writer left behind."""
    for tmp in shard_dir.glob(f".{shard_name(index)}.*.tmp"):
        tmp.unlink(missing_ok=True)
