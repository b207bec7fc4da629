"""Which shard records play which part for one training point: what it trains on, what
chooses its checkpoint, what scores it.

Without folds: the train split trains, the select split (``data.split.select``) or else the
validation split chooses, the validation split scores. With folds, for held-out fold k: the
train records (augmented copies included) of the other folds train, the select records of the
other folds (or else fold k) choose, and the originals of fold k score — no image of fold k,
nor a copy of one, is trained on. A final fit (``train.final_fit``) trains on every fold's
train records, the select records of every fold (if any) choose, and nothing scores it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from ..spec.schema import SplitSpec
from ..util import UserError
from .dataset import Index, load_index

Role = Literal["train", "select", "score"]


def role_index(run_root: Path, split: SplitSpec, role: Role) -> Index:
    """The records that play ``role`` for the point whose split settings are ``split``."""
    folds = int(split.folds or 0)
    if split.final:
        if role == "train" or (role == "select" and split.select):
            return _where(load_index(run_root, role), lambda fold, _: fold >= 0, folds)
        return _none(load_index(run_root, "train"))
    if split.fold is None:
        if role == "select" and split.select:
            return load_index(run_root, "select")
        return load_index(run_root, "train" if role == "train" else "val")
    k = split.fold
    if role == "train":
        return _where(load_index(run_root, "train"), lambda fold, _: fold != k, folds)
    if role == "select" and split.select:
        return _where(load_index(run_root, "select"), lambda fold, _: fold != k, folds)
    held_out = _concat(load_index(run_root, "train"), load_index(run_root, "select"))
    return _where(held_out, lambda fold, original: (fold == k) & original, folds)


def _where(index: Index, keep, folds: int) -> Index:
    """The records of ``index`` for which ``keep(fold, is_original)`` holds. Every record must
    have a fold below ``folds``: one outside (a shard written with other or no folds) would
    silently train on, or drop, held-out images."""
    held = np.empty(len(index), dtype=np.int64)
    original = np.empty(len(index), dtype=bool)
    for s, file in enumerate(index.files):
        positions = np.flatnonzero(index.shard == s)
        if not len(positions):
            continue
        with h5py.File(file, "r") as h5:
            rows = index.row[positions]
            if "fold" not in h5:
                raise UserError(
                    f"{file} was written without cross-validation folds (before "
                    "data.split.folds was set): ingest again into a new run directory"
                )
            found = h5["fold"][:][rows]
            if len(found) and (found.min() < 0 or found.max() >= folds):
                raise UserError(
                    f"{file} holds records of fold {int(found.min())}..{int(found.max())}, "
                    f"not 0..{folds - 1} (data.split.folds: {folds}): it was written with other "
                    "split settings; ingest again"
                )
            held[positions] = found
            original[positions] = np.array([not op for op in h5["ops"][:][rows]], dtype=bool)
    mask = np.asarray(keep(held, original), dtype=bool)
    return Index(index.files, index.shard[mask], index.row[mask], index.labels[mask])


def _concat(a: Index, b: Index) -> Index:
    """Two indexes over the same shards, in shard/row order."""
    shard = np.concatenate([a.shard, b.shard])
    row = np.concatenate([a.row, b.row])
    order = np.lexsort((row, shard))
    labels = np.concatenate([a.labels, b.labels])
    return Index(a.files, shard[order], row[order], labels[order])


def _none(index: Index) -> Index:
    """No records (of the same shards)."""
    return Index(index.files, index.shard[:0], index.row[:0], index.labels[:0])
