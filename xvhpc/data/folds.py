"""Cross-validation folds, the checkpoint-selection split, and near-duplicate images.

Pure numpy (and scikit-learn for the folds): ingest assigns each sample its fold and whether
it chooses checkpoints; merge looks for near-duplicates across the held-out parts with a
perceptual hash (dHash) of the images already resized for the shards.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from ..spec.schema import DataSpec, SplitSpec
from .catalog import CatalogError, Sample, split_samples

SELECT = "select"  # the split of the samples that choose checkpoints (never trained on)
NEAR_DISTANCE = 4  # dHash bits (of 64) at or below which two images count as near-duplicates
MAX_PAIRWISE = 50_000  # above this many originals only identical dHashes are compared


def group_key(sample: Sample) -> str:
    """A sample's group; an ungrouped sample is its own group (as ``split_samples`` does)."""
    return sample.group if sample.group is not None else f"\0{sample.rel}"


def split_settings(data: DataSpec) -> dict[str, Any]:
    """What decides each record's split and fold at ingest (a shard records it: one written
    under other settings is written again, not reused with stale splits)."""
    split = data.split.model_dump(exclude={"fold", "final"})  # those two the plan sets
    return {
        **split,
        "group_column": data.csv.group_column,
        "group_field": data.coco.group_field,
    }


def assign_folds(samples: list[Sample], split: SplitSpec) -> list[Sample]:
    """Each sample's fold: stratified by class, whole groups, seeded (StratifiedGroupKFold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = int(split.folds or 0)
    groups = [group_key(s) for s in samples]
    if len(set(groups)) < folds:
        raise CatalogError(
            f"data.split.folds: {folds} folds need at least {folds} patients/groups, "
            f"found {len(set(groups))}"
        )
    labels = [s.label if split.stratify else "" for s in samples]
    kfold = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=split.seed)
    out = [replace(s, split="train") for s in samples]
    with warnings.catch_warnings():  # a class rarer than the folds: counted in the manifest
        warnings.simplefilter("ignore", UserWarning)
        try:
            parts = list(kfold.split(np.zeros(len(samples)), labels, groups))
        except ValueError as exc:  # every class has fewer images than folds
            raise CatalogError(
                f"data.split.folds: {folds} folds cannot be stratified: images per class "
                f"{dict(sorted(Counter(s.label for s in samples).items()))} ({exc})"
            ) from None
    for k, (_, held_out) in enumerate(parts):
        for i in held_out.tolist():
            out[i] = replace(out[i], fold=k)
    return out


def carve_select(samples: list[Sample], split: SplitSpec) -> list[Sample]:
    """Move ``split.select`` of the training groups (stratified, seeded) to the ``select``
    split, which chooses the checkpoint: the validation split (or held-out fold) that the
    model is scored on then plays no part in choosing it."""
    if not split.select:
        return samples
    train = [i for i, s in enumerate(samples) if s.split == "train"]
    carved = split_samples(
        [samples[i] for i in train], split.select, split.seed + 1, split.stratify
    )
    out = list(samples)
    for i, s in zip(train, carved, strict=True):
        if s.split == "val":
            out[i] = replace(samples[i], split=SELECT)
    return out


# fewer training originals than this per class in a fold (or the train split) is worth a word
FEW_PER_CLASS = 5


def thin_training(samples: list[Sample], split: SplitSpec) -> str | None:
    """A warning when the select split (or the folds) leave a model only a handful of images
    to train on: ``select: 0.999`` silently trained each fold on 1-3 images (issue 23)."""
    if not split.select:
        return None
    folds = range(split.folds) if split.folds else [None]
    worst: tuple[int, Counter[str], int | None] | None = None
    for k in folds:
        trained = Counter(
            s.label for s in samples if s.split == "train" and (k is None or s.fold != k)
        )
        fewest = min(trained.values(), default=0)
        if worst is None or fewest < worst[0]:
            worst = (fewest, trained, k)
    assert worst is not None
    fewest, trained, k = worst
    if fewest >= FEW_PER_CLASS:
        return None
    where = f"fold {k}'s model" if k is not None else "the model"
    return (
        f"data.split.select {split.select} leaves {where} {sum(trained.values())} training "
        f"image(s) ({dict(sorted(trained.items()))}): fewer than {FEW_PER_CLASS} in a class; "
        "lower data.split.select"
    )


def dhash(image: np.ndarray) -> str:
    """64-bit difference hash of an (H, W, C) uint8 image: brightness gradients of a 9×8
    gray thumbnail, robust to resizing, compression and small intensity changes."""
    gray = image.mean(axis=2).astype(np.uint8) if image.ndim == 3 else image
    thumb = np.asarray(Image.fromarray(gray).resize((9, 8), Image.Resampling.BOX), np.int16)
    bits = (thumb[:, 1:] > thumb[:, :-1]).ravel()
    return f"{int(np.packbits(bits).view('>u8')[0]):016x}"


def near_duplicates(entries: list[dict], limit: int = 100) -> dict:
    """Pairs of originals in different held-out parts whose dHashes differ by ≤ NEAR_DISTANCE
    bits. ``entries``: ``{"part", "dhash", "source"}`` per original image."""
    if not entries:
        return {"pairs": 0, "max_distance": NEAR_DISTANCE, "examples": [], "method": "dhash"}
    codes = np.array([int(e["dhash"], 16) for e in entries], dtype=np.uint64)
    parts = np.array([e["part"] for e in entries])
    if len(entries) > MAX_PAIRWISE:
        pairs = _identical_pairs(codes, parts)
        method = "dhash (identical hashes only: too many images for all pairs)"
    else:
        pairs = _close_pairs(codes, parts)
        method = "dhash"
    examples = [
        {
            "a": entries[i]["source"],
            "part_a": str(parts[i]),
            "b": entries[j]["source"],
            "part_b": str(parts[j]),
            "distance": d,
        }
        for i, j, d in sorted(pairs, key=lambda p: (p[2], p[0], p[1]))[:limit]
    ]
    return {
        "pairs": len(pairs),
        "max_distance": NEAR_DISTANCE,
        "examples": examples,
        "method": method,
    }


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64: ``np.bitwise_count`` where numpy has it (2.0+), else a byte
    table (Open-CE's torch 2.0.1 environments hold numpy 1.x)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = np.ascontiguousarray(values, np.uint64).view(np.uint8)
    return _BYTE_BITS[as_bytes].reshape(*values.shape, 8).sum(-1, dtype=np.uint8)


def _close_pairs(codes: np.ndarray, parts: np.ndarray, chunk: int = 1024) -> list:
    found = []
    for start in range(0, len(codes), chunk):
        block = codes[start : start + chunk]
        dist = popcount(block[:, None] ^ codes[None, :])
        rows, cols = np.nonzero(dist <= NEAR_DISTANCE)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i < c and parts[i] != parts[c]:
                found.append((i, c, int(dist[r, c])))
    return found


def _identical_pairs(codes: np.ndarray, parts: np.ndarray) -> list:
    by_code: defaultdict[int, list[int]] = defaultdict(list)
    for i, code in enumerate(codes.tolist()):
        by_code[code].append(i)
    return [
        (i, j, 0)
        for same in by_code.values()
        for n, i in enumerate(same)
        for j in same[n + 1 :]
        if parts[i] != parts[j]
    ]


def part_of(split: str, fold: int) -> str:
    """The held-out part an original belongs to: its split, and its fold when there are folds."""
    return f"fold {fold} {split}" if fold >= 0 else split
