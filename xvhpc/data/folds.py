"""How samples are split: the validation split, cross-validation folds and the
checkpoint-selection split (``select``), and the settings that decide them.

Pure Python (and scikit-learn for the folds), over ``data/sample.py``'s ``Sample``: the
catalogs call these after listing a source; ingest records the settings in each shard.
"""

from __future__ import annotations

import random
import warnings
import zlib
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

import numpy as np

from ..spec.schema import DataSpec, SplitSpec
from .sample import CatalogError, Sample

SELECT = "select"  # the split of the samples that choose checkpoints (never trained on)


def group_key(sample: Sample) -> str:
    """A sample's group; an ungrouped sample is its own group (as ``split_samples`` does)."""
    return sample.group if sample.group is not None else f"\0{sample.rel}"


def split_samples(
    samples: list[Sample], fraction: float, seed: int, stratify: bool
) -> list[Sample]:
    """Seeded split; stratified by class; group-aware (no group on both sides)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[s.group if s.group is not None else f"\0{s.rel}"].append(i)
    group_class = {
        g: Counter(samples[i].label for i in idx).most_common(1)[0][0] for g, idx in groups.items()
    }
    strata: dict[str, list[str]] = defaultdict(list)
    for g in sorted(groups):
        strata[group_class[g] if stratify else ""].append(g)
    val_groups: set[str] = set()
    for stratum, names in sorted(strata.items()):
        rng = random.Random(seed * 1_000_003 + zlib.crc32(stratum.encode()))
        names = names[:]
        rng.shuffle(names)
        total = sum(len(groups[g]) for g in names)
        want = round(total * fraction)
        if len(names) > 1:
            want = max(want, 1)
        taken = chosen = 0
        for g in names:
            if taken >= want or chosen >= len(names) - 1:  # keep one group for training
                break
            val_groups.add(g)
            taken += len(groups[g])
            chosen += 1
    out = list(samples)
    for g, idx in groups.items():
        for i in idx:
            out[i] = replace(samples[i], split="val" if g in val_groups else "train")
    return out


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


def part_of(split: str, fold: int) -> str:
    """The held-out part an original belongs to: its split, and its fold when there are folds."""
    return f"fold {fold} {split}" if fold >= 0 else split
