"""What ingest lists: a ``Sample`` (one file, its label, split, fold and planned copies), the
``Catalog`` of a data source, and ``CatalogError``. Plain data, the leaf of ``data/``: the
catalogs build these and the split and folds reassign them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class CatalogError(Exception):
    """The data source as a whole cannot be used (missing, fewer than two classes, bad CSV)."""


@dataclass(frozen=True)
class Sample:
    """One file to ingest: where it is, its label and group, and what ingest does with it."""

    path: str  # absolute
    rel: str  # as shown to people and stored in shards
    label: str
    group: str | None = None
    split: str = "train"  # train | val
    copies: int = 0  # offline augmented copies (training split only)
    # what the task annotates beyond the label, as its catalog lists it (detection: a tuple of
    # (x0, y0, x1, y1, class index) per box, () for an image without boxes); None: nothing
    target: Any = None
    fold: int = -1  # cross-validation: the fold this sample is held out in (-1: no folds)


@dataclass
class Catalog:
    """A listed, split and planned data source: its classes, samples and what was left out."""

    classes: list[str]
    samples: list[Sample]
    skipped: list[dict[str, str]] = field(default_factory=list)  # found but unusable before decode
    notes: list[str] = field(default_factory=list)
    unlabelled: int = 0
    # hidden files and folders: listed in the manifest's skipped, not counted as bad inputs
    ignored: list[dict[str, str]] = field(default_factory=list)

    def shard(self, index: int, shards: int) -> list[Sample]:
        """Shard ``index``'s samples: every ``shards``-th, so shards agree without talking."""
        return self.samples[index::shards]
