"""Reading shards for training: lazy per-worker HDF5 handles, rank-disjoint seeded batches."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ..lock import launch_rank
from ..rundir import Layout
from ..util import UserError
from .shards import SPLITS, content_hash, file_sha256
from .stage import shard_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Index:
    """Where each sample of one split lives: (shard number, row) pairs and labels."""

    files: tuple[str, ...]
    shard: np.ndarray
    row: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


class ShardCorrupt(UserError):
    """A shard whose bytes are not the ones ingest wrote (its sha256 differs)."""


def read_manifest(run_root: Path) -> dict:
    """manifest.json, or a ``UserError`` naming it when it is missing or damaged."""
    path = Layout(run_root).manifest
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: run ingest first") from None
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise UserError(
            f"{path} is damaged ({exc}); write it again: xvhpc ingest --run-dir {run_root} --merge"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise UserError(f"{path} is not an xvhpc manifest (no list of shards)")
    return manifest


def verify_shard(run_root: Path, path: Path, entry: dict) -> None:
    """Refuse a shard that changed since ingest recorded its sha256 in the manifest.

    Once per shard per process (the digest is remembered), and only in the process of rank 0:
    every rank reads the same file, and a corrupt shard stops rank 0 and with it the job."""
    expected = entry.get("sha256")
    if not expected or launch_rank() != 0:
        return
    found = file_sha256(path)
    if found != expected:
        index = entry["file"].removeprefix("shard-").removesuffix(".h5").lstrip("0") or "0"
        raise ShardCorrupt(
            f"{path} does not match the sha256 that ingest recorded in manifest.json (recorded "
            f"{expected[:12]}…, now {found[:12]}…): it changed after it was written. Write it "
            f"again: xvhpc ingest --run-dir {run_root} --shard {index} --merge"
        )


def load_index(run_root: Path, split: str) -> Index:
    """Index one split over every shard listed in manifest.json (excluded leaks dropped); each
    shard's sha256 is checked first (``verify_shard``)."""
    manifest = read_manifest(run_root)
    exclude = set(manifest.get("exclude_val_hashes", []))
    files, shards, rows, labels = [], [], [], []
    source = shard_dir(run_root)  # node-local copy when staged
    for n, entry in enumerate(manifest["shards"]):
        path = source / entry["file"]
        files.append(str(path))
        verify_shard(run_root, path, entry)
        with h5py.File(path, "r") as h5:
            split_col = h5["split"][:]
            lab = h5["labels"][:]
            keep = np.nonzero(split_col == SPLITS[split])[0]
            if exclude and split == "val":
                keep = np.array(
                    [i for i in keep if content_hash(h5["images"][i]) not in exclude],
                    dtype=np.int64,
                )
        shards.append(np.full(len(keep), n, dtype=np.int32))
        rows.append(keep.astype(np.int64))
        labels.append(lab[keep].astype(np.int64))
    cat = lambda xs, t: np.concatenate(xs) if xs else np.zeros(0, t)  # noqa: E731
    return Index(tuple(files), cat(shards, np.int32), cat(rows, np.int64), cat(labels, np.int64))


def row_offsets(images: h5py.Dataset) -> np.ndarray | None:
    """The file offset of each row's bytes when every row is one unfiltered chunk (an
    uncompressed shard as ``ShardWriter`` writes it), else None. A row is then one plain
    ``pread`` of the file: no HDF5 selection, no chunk cache, no per-read Python overhead in
    h5py (a random-order batch of 224 px gray here: ~290 CPU µs per sample down to ~25)."""
    n = images.shape[0]
    shape = (1, *images.shape[1:])
    if (
        n == 0
        or images.dtype != np.uint8
        or images.chunks != shape
        or images.id.get_create_plist().get_nfilters()
        or images.file.userblock_size
        or not hasattr(images.id, "chunk_iter")  # HDF5 < 1.12.3: read through h5py
    ):
        return None
    row_bytes = int(np.prod(shape))
    offsets = np.full(n, -1, dtype=np.int64)

    def visit(info) -> None:
        row = info.chunk_offset[0]
        if row < n and info.size == row_bytes and not info.filter_mask and info.byte_offset:
            offsets[row] = info.byte_offset

    images.id.chunk_iter(visit)
    return offsets if offsets.min() >= 0 else None


def runs(values: np.ndarray, step: int) -> list[tuple[int, int]]:
    """[a, b) spans of ``values`` that go up by ``step`` from one element to the next."""
    breaks = (np.nonzero(np.diff(values) != step)[0] + 1).tolist()
    return list(zip([0, *breaks], [*breaks, len(values)], strict=True))


def pread_exactly(fd: int, buffer: memoryview, offset: int) -> bool:
    """Fill ``buffer`` from ``offset``; False when the file ends first. One call may return
    less than asked (Linux caps a read at 2 GiB - 4 KiB: a large in-memory cache), so loop."""
    done = 0
    while done < len(buffer):
        got = os.preadv(fd, [buffer[done:]], offset + done)
        if got == 0:
            return False
        done += got
    return True


class ShardDataset(Dataset):
    """uint8 HxWxC images from shards. Files open lazily in each worker, never before fork.

    Uncompressed shards are read with ``os.preadv`` at each row's file offset (``row_offsets``,
    from the HDF5 chunk index once per shard per process), compressed ones through h5py.
    """

    def __init__(
        self,
        index: Index,
        cache_in_memory: bool = False,
        chunk_cache_mb: int = 64,
        direct: bool = True,
    ):
        self.index = index
        self.direct = direct  # False: every read through h5py (to compare the two)
        self.chunk_cache = chunk_cache_mb * 1024 * 1024
        self._handles: dict[int, h5py.File] = {}
        self._raw: dict[int, tuple[int, np.ndarray] | None] = {}
        self._memory: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None
        if cache_in_memory:
            self._memory = self._read_many(np.arange(len(index))) if len(index) else None
            self._close()

    def _file(self, shard: int) -> h5py.File:
        handle = self._handles.get(shard)
        if handle is None:
            handle = h5py.File(
                self.index.files[shard], "r", rdcc_nbytes=self.chunk_cache, rdcc_nslots=10007
            )
            self._handles[shard] = handle
        return handle

    def _raw_file(self, shard: int) -> tuple[int, np.ndarray] | None:
        """The file descriptor HDF5 reads the shard through and its row offsets, for an
        uncompressed shard (``pread`` leaves HDF5's own reads undisturbed); else None."""
        if shard not in self._raw:
            h5 = self._file(shard)
            offsets = row_offsets(h5["images"]) if self.direct and h5.driver == "sec2" else None
            self._raw[shard] = None if offsets is None else (h5.id.get_vfd_handle(), offsets)
        return self._raw[shard]

    def _sample_shape(self, shard: int) -> tuple[int, ...]:
        """HxWxC of every sample (one spec, one size), asked of HDF5 once per process."""
        if self._shape is None:
            self._shape = tuple(self._file(shard)["images"].shape[1:])
        return self._shape

    def _read(self, i: int) -> np.ndarray:
        return self._read_many(np.array([i]))[0]

    def _close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._raw.clear()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self._memory[i] if self._memory is not None else self._read(i)
        return torch.from_numpy(np.ascontiguousarray(image)), int(self.index.labels[i])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """A whole batch (the DataLoader calls this instead of one ``__getitem__`` per sample):
        rows sorted and read as runs of consecutive rows, one read per run; the
        block-shuffled order of ``RankBatches(block=...)`` makes the runs long. Samples come
        back in the order asked, as views of one uint8 buffer (no per-sample copy)."""
        idx = np.asarray(indices, dtype=np.int64)
        labels = self.index.labels[idx].tolist()
        if self._memory is not None:
            return list(zip(torch.from_numpy(self._memory[idx]), labels, strict=True))
        images, where = self._read_sorted(idx)
        tensor = torch.from_numpy(images)
        return [(tensor[int(k)], label) for k, label in zip(where, labels, strict=True)]

    def _read_many(self, idx: np.ndarray) -> np.ndarray:
        """Samples ``idx`` as one array, in the order asked."""
        images, where = self._read_sorted(idx)
        return images[where]

    def _read_sorted(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``idx`` read in (shard, row) order into one array, and where each asked
        sample lies in it."""
        shards, rows = self.index.shard[idx], self.index.row[idx]
        order = np.lexsort((rows, shards))
        shards, rows = shards[order], rows[order]
        out = np.empty((len(rows), *self._sample_shape(int(shards[0]))), dtype=np.uint8)
        for a, b in runs(shards, 0):
            self._read_rows(int(shards[a]), rows[a:b], out[a:b])
        where = np.empty_like(order)
        where[order] = np.arange(len(order))
        return out, where

    def _read_rows(self, shard: int, rows: np.ndarray, out: np.ndarray) -> None:
        """Sorted rows of one shard into ``out``, one read per run of consecutive rows."""
        raw = self._raw_file(shard)
        if raw is None:
            images = self._file(shard)["images"]
            for a, b in runs(rows, 1):
                row = int(rows[a])
                images.read_direct(out, np.s_[row : row + b - a], np.s_[a:b])
            return
        fd, offsets = raw
        at = offsets[rows]
        for a, b in runs(at, out[0].nbytes):
            if not pread_exactly(fd, out[a:b].reshape(-1).data, int(at[a])):  # a view: bytes
                raise ShardCorrupt(
                    f"{self.index.files[shard]} is shorter than its own HDF5 index says: it was "
                    "cut short after ingest wrote it; write it again (xvhpc ingest --merge)"
                )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}  # file handles never cross a fork/spawn
        state["_raw"] = {}
        return state


def block_order(n: int, epoch: int, seed: int, block: int) -> np.ndarray:
    """Every index once, as blocks of ``block`` consecutive indices in a seeded random order
    (the last block may be short): consecutive indices are consecutive rows of a shard, so
    a batch is a few contiguous reads instead of one read per sample."""
    rng = np.random.default_rng([seed, epoch])
    starts = rng.permutation(-(-n // block)) * block
    order = (starts[:, None] + np.arange(block)).ravel()
    return order[order < n]


def epoch_order(n: int, epoch: int, seed: int, weights: np.ndarray | None = None) -> np.ndarray:
    """The global sample order of one epoch (seeded; weighted with replacement when balanced)."""
    rng = np.random.default_rng([seed, epoch])
    if weights is not None:
        return rng.choice(n, size=n, replace=True, p=weights / weights.sum())
    return rng.permutation(n)


class RankBatches:
    """Batches of indices for one rank from iteration ``start`` on: disjoint across ranks,
    reshuffled each epoch, the same for the same (seed, iteration) — so a resume is exact.

    ``block > 1`` (not with ``weights``): the epoch is shuffled in blocks of consecutive
    samples (``block_order``), each rank takes a contiguous part of it and each batch is
    shuffled within itself, so batches read as few contiguous runs."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        rank: int,
        world: int,
        seed: int,
        start: int = 0,
        weights: np.ndarray | None = None,
        block: int = 1,
    ):
        self.n, self.batch, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.start, self.weights = start, weights
        self.block = block if weights is None else 1  # sampling with replacement: no blocks
        self.steps_per_epoch = max(1, (n // world) // batch_size)

    def batch_at(self, iteration: int) -> list[int]:
        epoch, step = divmod(iteration, self.steps_per_epoch)
        if self.block > 1:
            return self._block_batch(epoch, step)
        order = epoch_order(self.n, epoch, self.seed, self.weights)
        usable = (len(order) // self.world) * self.world or len(order)
        mine = order[:usable][self.rank :: self.world] if usable >= self.world else order
        if len(mine) < self.batch:  # tiny data: wrap around
            mine = np.resize(mine, self.batch)
        return mine[step * self.batch : (step + 1) * self.batch].tolist()

    def _block_batch(self, epoch: int, step: int) -> list[int]:
        order = block_order(self.n, epoch, self.seed, self.block)
        per = len(order) // self.world
        mine = order[self.rank * per : (self.rank + 1) * per] if per else order
        if len(mine) < self.batch:  # tiny data: wrap around
            mine = np.resize(mine, self.batch)
        batch = mine[step * self.batch : (step + 1) * self.batch]
        rng = np.random.default_rng([self.seed, epoch, self.rank, step])
        return batch[rng.permutation(len(batch))].tolist()

    def __iter__(self):
        iteration = self.start
        while True:
            yield self.batch_at(iteration)
            iteration += 1


def to_model_input(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC (1 or 3 channels) → float NCHW, 3 channels, ImageNet-normalised.

    One fused multiply-add: (x / 255 - mean) / std == x * (1 / (255 std)) - mean / std, and a
    grayscale channel broadcasts to three in the same operation.
    """
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2)
    scale = (1.0 / (255.0 * torch.tensor(IMAGENET_STD, device=x.device))).view(1, 3, 1, 1)
    shift = (
        -torch.tensor(IMAGENET_MEAN, device=x.device) / torch.tensor(IMAGENET_STD, device=x.device)
    ).view(1, 3, 1, 1)
    # written straight into a contiguous NCHW tensor: no channels-last intermediate to copy
    # (same values; 1.2x faster for gray, 5x for RGB on CPU)
    out = torch.empty((x.shape[0], 3, *x.shape[2:]), device=x.device)
    return torch.addcmul(shift, x.float(), scale, out=out)


def online_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Light augmentation on tensors: random horizontal flip and small brightness jitter."""
    n = x.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1).to(x.device), x.flip(3), x)
    jitter = (torch.rand(n, generator=generator) - 0.5) * 0.2
    return x + jitter.view(n, 1, 1, 1).to(x.device)
