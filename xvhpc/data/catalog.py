"""What to ingest: list labelled samples (class folders or CSV), split them, plan augmentation."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import random
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..spec.schema import DataSpec


class CatalogError(Exception):
    """The data source as a whole cannot be used (missing, fewer than two classes, bad CSV)."""


@dataclass(frozen=True)
class Sample:
    path: str  # absolute
    rel: str  # as shown to people and stored in shards
    label: str
    group: str | None = None
    split: str = "train"  # train | val
    copies: int = 0  # offline augmented copies (training split only)


@dataclass
class Catalog:
    classes: list[str]
    samples: list[Sample]
    skipped: list[dict[str, str]] = field(default_factory=list)  # found but unusable before decode
    notes: list[str] = field(default_factory=list)
    unlabelled: int = 0

    def shard(self, index: int, shards: int) -> list[Sample]:
        return self.samples[index::shards]


_HIDDEN = (".", "_")
_VAL_NAMES = ("val", "validation", "valid")


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(_HIDDEN))


def _files(folder: Path) -> list[Path]:
    """Every file under a class folder, hidden ones aside (dangling links and links to folders
    included: they are reported, not lost; linked folders are not descended, as ``rglob``)."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath)
        out.extend(base / name for name in filenames if not name.startswith("."))
        out.extend(base / d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
    return sorted(out)


def _from_folders(
    root: Path, catalog_notes: list[str]
) -> tuple[list[Sample], list[dict[str, str]]]:
    samples: list[Sample] = []
    skipped: list[dict[str, str]] = []
    root = root.resolve()  # once: every path below is then absolute without a per-file realpath
    sub = {p.name.lower(): p for p in _class_dirs(root)}
    explicit = "train" in sub and any(v in sub for v in _VAL_NAMES)
    parts = (
        [("train", sub["train"]), ("val", next(sub[v] for v in _VAL_NAMES if v in sub))]
        if explicit
        else [("", root)]
    )
    if explicit:
        catalog_notes.append("explicit train/ and val/ folders: their split is used as given")
    for split, base in parts:
        for file in sorted(p for p in base.iterdir() if p.is_file() and not p.name.startswith(".")):
            skipped.append(
                {"path": str(file.relative_to(root)), "reason": "not inside a class folder"}
            )
        for class_dir in _class_dirs(base):
            files = _files(class_dir)
            if not files:
                catalog_notes.append(f"class folder {class_dir.relative_to(root)}/ is empty")
            for file in files:
                samples.append(
                    Sample(
                        str(file),
                        str(file.relative_to(root)),
                        class_dir.name,
                        None,
                        split or "train",
                    )
                )
    return samples, skipped


def _from_csv(csv_path: Path, spec: DataSpec) -> tuple[list[Sample], list[dict[str, str]], int]:
    cfg = spec.csv
    base = csv_path.parent
    samples: list[Sample] = []
    skipped: list[dict[str, str]] = []
    unlabelled = 0
    raw = csv_path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # spreadsheets exported on Windows: cp1252/latin-1
        text = raw.decode("latin-1")
    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        needed = (
            [cfg.label_column]
            + ([] if cfg.path_pattern else [cfg.path_column])
            + ([cfg.group_column] if cfg.group_column else [])
        )
        missing = [c for c in needed if c not in columns]
        if missing:
            raise CatalogError(
                f"{csv_path}: column(s) {', '.join(missing)} not found (columns: {', '.join(columns)}); set data.csv.*_column"
            )
        for row_number, row in enumerate(reader, start=2):
            label = (row.get(cfg.label_column) or "").strip()
            label = cfg.label_map.get(label, label)
            if not label:
                unlabelled += 1
                continue
            if cfg.path_pattern:
                pattern = cfg.path_pattern.format(**row)
                matches = sorted(glob.glob(str(base / pattern)))
                rel = pattern
                if not matches:
                    skipped.append(
                        {"path": rel, "reason": f"file not found (CSV line {row_number})"}
                    )
                    continue
                file = Path(matches[0])
            else:
                rel = (row.get(cfg.path_column) or "").strip()
                file = base / rel
                if not rel or not file.is_file():
                    skipped.append(
                        {
                            "path": rel or f"<line {row_number}>",
                            "reason": f"file not found (CSV line {row_number})",
                        }
                    )
                    continue
            group = None
            if cfg.group_column:
                group = (row.get(cfg.group_column) or "").strip() or None
            samples.append(
                Sample(
                    str(file.resolve()),
                    str(file.relative_to(base)) if file.is_relative_to(base) else str(file),
                    label,
                    group,
                )
            )
    return samples, skipped, unlabelled


def _from_coco(json_path: Path, spec: DataSpec) -> tuple[list[Sample], list[dict[str, str]], int]:
    """COCO JSON (images, annotations, categories) with one category per image."""
    cfg = spec.coco
    try:
        doc = json.loads(json_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{json_path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise CatalogError(
            f"{json_path}: not COCO JSON (needs lists 'images', 'annotations' and 'categories')"
        )
    try:
        names = {c["id"]: str(c["name"]) for c in doc["categories"]}
        labels: dict[object, set[str]] = defaultdict(set)
        unknown: dict[object, set[object]] = defaultdict(set)
        for ann in doc["annotations"]:
            category = ann["category_id"]
            if category in names:
                labels[ann["image_id"]].add(names[category])
            else:
                unknown[ann["image_id"]].add(category)
        images = [(im["id"], str(im["file_name"]), im) for im in doc["images"]]
    except (KeyError, TypeError) as exc:
        raise CatalogError(f"{json_path}: COCO entry without the field {exc}") from None
    base = json_path.parent / cfg.image_dir
    samples: list[Sample] = []
    skipped: list[dict[str, str]] = []
    unlabelled = 0
    for image_id, rel, image in images:
        found = labels.get(image_id, set())
        reason = None
        if unknown.get(image_id):
            ids = ", ".join(map(str, sorted(unknown[image_id], key=str)))
            reason = f"annotation with unknown category_id {ids} (COCO image id {image_id})"
        elif len(found) > 1:
            reason = f"annotated with several categories ({', '.join(sorted(found))}); classification takes one per image"
        elif not found:
            unlabelled += 1
            continue
        elif not (base / rel).is_file():
            reason = f"file not found (COCO image id {image_id})"
        if reason:
            skipped.append({"path": rel, "reason": reason})
            continue
        group = image.get(cfg.group_field) if cfg.group_field else None
        samples.append(
            Sample(
                str((base / rel).resolve()),
                rel,
                next(iter(found)),
                None if group in (None, "") else str(group),
            )
        )
    return samples, skipped, unlabelled


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


def plan_copies(samples: list[Sample], spec: DataSpec) -> list[Sample]:
    """Number of offline augmented copies per training sample, per class (copies or target_count)."""
    out = list(samples)
    for label, aug in spec.augment.items():
        idx = [i for i, s in enumerate(samples) if s.label == label and s.split == "train"]
        if not idx:
            continue
        if aug.copies is not None:
            per = [aug.copies] * len(idx)
        else:
            extra = max(0, (aug.target_count or 0) - len(idx))
            base, rest = divmod(extra, len(idx))
            per = [base + (1 if k < rest else 0) for k in range(len(idx))]
        for i, copies in zip(idx, per, strict=True):
            out[i] = replace(samples[i], copies=copies)
    return out


def build_catalog(source: str | Path, spec: DataSpec) -> Catalog:
    """List, split and plan a data source. Deterministic for the same files and spec."""
    source = Path(source)
    notes: list[str] = []
    unlabelled = 0
    if not source.exists():
        raise CatalogError(f"data.source {source} does not exist")
    suffix = source.suffix.lower()
    kind = spec.format
    if kind == "auto":
        kind = {".csv": "csv", ".json": "coco"}.get(suffix, "folders")
    if kind in ("csv", "coco"):
        if not source.is_file():
            raise CatalogError(f"data.source {source} is not a file (data.format {kind})")
        read = _from_csv if kind == "csv" else _from_coco
        samples, skipped, unlabelled = read(source, spec)
        explicit = False
    else:
        if not source.is_dir():
            raise CatalogError(
                f"data.source {source} is neither a folder of class folders, a .csv manifest nor COCO .json"
            )
        samples, skipped = _from_folders(source, notes)
        explicit = any("explicit train/" in n for n in notes)
    samples.sort(key=lambda s: s.rel)
    classes = sorted({s.label for s in samples})
    if len(classes) < 2:
        found = ", ".join(classes) or "none"
        raise CatalogError(
            f"need at least two classes with images, found {len(classes)} ({found}) in {source}"
        )
    unknown_aug = sorted(set(spec.augment) - set(classes))
    if unknown_aug:
        raise CatalogError(
            f"data.augment names class(es) {', '.join(unknown_aug)} not in the data (classes: {', '.join(classes)})"
        )
    if not explicit:
        samples = split_samples(
            samples, spec.split.validation, spec.split.seed, spec.split.stratify
        )
    samples = plan_copies(samples, spec)
    return Catalog(classes, samples, skipped, notes, unlabelled)
