"""What to ingest for detection: images and their boxes from COCO JSON or a CSV of box rows.

Bad boxes (zero area, outside the image, unknown category, crowd regions) are dropped one by
one with the reason, listed in the manifest's ``skipped`` without counting as bad files; an
image left with no box stays as a negative. The split and augmentation plan are the
classification ones: group-aware, stratified by each image's most frequent class.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from pathlib import Path

from ...data.catalog import (
    display_name,
    plan_copies,
    read_coco,
    read_csv_text,
)
from ...data.coco import (
    coco_annotations,
    coco_categories,
    coco_images,
    coco_size,
    image_size,
    number,
    true_size,
)
from ...data.folds import split_samples
from ...data.frames import Listed, frame_order, locate, one_group_per_video
from ...data.sample import Catalog, CatalogError, Sample
from ...spec.schema import DataSpec

NO_BOXES = "(no boxes)"  # the stratum and count key of images without a box
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
Box = tuple[float, float, float, float, int]


def check_box(
    xyxy: list[float], size: tuple[float, float] | None
) -> tuple[list[float], str | None]:
    """The box clipped to the image, or why it is unusable."""
    x0, y0, x1, y1 = xyxy
    if not all(v == v and abs(v) != float("inf") for v in xyxy):
        return xyxy, "not a finite number"
    if x1 <= x0 or y1 <= y0:
        return xyxy, "zero or negative area"
    if size is not None:
        width, height = size
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            return xyxy, f"outside the image ({width:g}x{height:g})"
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return [x0, y0, x1, y1], None


def _sample(found: Listed, boxes: list[Box], group: str | None, classes: list[str]) -> Sample:
    counts = Counter(b[4] for b in boxes)
    label = classes[max(sorted(counts), key=counts.__getitem__)] if boxes else NO_BOXES
    return Sample(str(found.file), found.shown, label, group, target=tuple(boxes))


def _grouped(samples: list[Sample], found: list[Listed]) -> list[Sample]:
    """The samples with each video's labelled frames in one group (``frames``)."""
    return one_group_per_video(samples, {f.shown: f.video for f in found if f.video})


def _coco_box(
    ann: dict, size: tuple[float, float] | None, index: dict
) -> tuple[list[float], str | None]:
    """The annotation's box as x0,y0,x1,y1, or why it is dropped."""
    if ann["category_id"] not in index:
        return [], f"unknown category_id {ann['category_id']}"
    if ann.get("iscrowd") in (1, True):
        return [], "crowd region (iscrowd: 1)"
    bbox = ann.get("bbox")
    listed = bbox if isinstance(bbox, (list, tuple)) else []
    values = [n for n in map(number, listed) if n is not None]
    if len(values) != 4 or len(listed) != 4:
        return [], f"bbox is not 4 numbers [x, y, width, height]: {bbox!r:.60}"
    x, y, w, h = values
    return check_box([x, y, x + w, y + h], size)


def from_coco(
    json_path: Path, spec: DataSpec, notes: list[str]
) -> tuple[list[str], list[Sample], list, list]:
    """Classes (category names by id), samples with boxes, skipped files, dropped boxes."""
    doc = read_coco(json_path)
    classes, index = coco_categories(json_path, doc)
    images = coco_images(json_path, doc)
    per_image, skipped = coco_annotations(json_path, doc, {i for _, i, _, _ in images})
    base = json_path.parent / spec.coco.image_dir
    samples, dropped, listed = [], [], []
    seen: dict[tuple[Path, str], str] = {}
    for where, image_id, rel, image in images:
        size = coco_size(json_path, where, image)
        found, why = locate(base, rel, spec.follow_links)
        if found is None:
            skipped.append(
                {"path": display_name(rel), "reason": f"{why} (COCO image id {image_id})"}
            )
            continue
        size = true_size(size, found.file, found.shown, notes)
        if found.key in seen:
            raise CatalogError(
                f"{json_path}: {where}.file_name: {display_name(rel)!r} is the file of "
                f"{seen[found.key]} too; list each image once with all its annotations"
            )
        seen[found.key] = where
        boxes: list[Box] = []
        for ann_where, ann in per_image.get(image_id, []):
            xyxy, reason = _coco_box(ann, size, index)
            if reason:
                dropped.append(
                    {
                        "path": found.shown,
                        "reason": f"box skipped: {reason} (COCO annotation id "
                        f"{ann.get('id')}, {ann_where})",
                    }
                )
                continue
            x0, y0, x1, y1 = xyxy
            boxes.append((x0, y0, x1, y1, index[ann["category_id"]]))
        group = image.get(spec.coco.group_field) if spec.coco.group_field else None
        group = None if group in (None, "") else display_name(str(group))
        samples.append(_sample(found, boxes, group, classes))
        listed.append(found)
    return classes, _grouped(samples, listed), skipped, dropped


def _csv_rows(csv_path: Path, spec: DataSpec) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(read_csv_text(csv_path), newline=""))
    columns = reader.fieldnames or []
    cfg = spec.csv
    needed = [cfg.path_column, cfg.label_column, *BOX_COLUMNS] + (
        [cfg.group_column] if cfg.group_column else []
    )
    missing = [c for c in needed if c not in columns]
    if missing:
        raise CatalogError(
            f"{csv_path}: column(s) {', '.join(missing)} not found (columns: "
            f"{', '.join(columns)}); detection CSV: path,label,x0,y0,x1,y1 (one row per box)"
        )
    try:
        return list(enumerate(reader, start=2))
    except csv.Error as exc:  # a field over 128 KiB: one error, not a traceback
        raise CatalogError(
            f"{csv_path}: not a usable CSV near line {reader.line_num}: {exc}"
        ) from None


def _csv_label(csv_path: Path, line: int, row: dict[str, str], spec: DataSpec) -> str:
    """The row's class after data.csv.label_map ('' for an image's row without a box)."""
    raw = (row.get(spec.csv.label_column) or "").strip()
    if not raw:
        return ""
    mapped = spec.csv.label_map.get(raw, raw)
    if not isinstance(mapped, str) or not mapped.strip():
        raise CatalogError(
            f"{csv_path}: line {line}: data.csv.label_map maps {raw!r} to {mapped!r}; "
            "a class needs a non-empty name"
        )
    return display_name(mapped.strip())


def _csv_files(
    csv_path: Path, rows: list[tuple[int, dict[str, str]]], spec: DataSpec, notes: list[str]
) -> tuple[list[tuple[Listed, list[tuple[int, dict[str, str]]]]], list[dict[str, str]]]:
    """Rows grouped per file on disk, or per frame of a video (``a.png`` and ``./a.png`` are
    one image, its boxes merged and noted), and the files that cannot be read."""
    by_name: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
    for line, row in rows:
        by_name[(row.get(spec.csv.path_column) or "").strip()].append((line, row))
    skipped = []
    by_file: dict[tuple[Path, str], list[tuple[str, list[tuple[int, dict[str, str]]]]]] = (
        defaultdict(list)
    )
    located: dict[tuple[Path, str], Listed] = {}
    for rel, listed in sorted(by_name.items()):
        found, why = locate(csv_path.parent, rel, spec.follow_links) if rel else (None, "no path")
        if found is None:
            shown = display_name(rel) or "<empty>"
            skipped.append({"path": shown, "reason": f"{why} (CSV line {listed[0][0]})"})
            continue
        by_file[found.key].append((rel, listed))
        known = located.setdefault(found.key, found)  # the shortest name of a file is its name
        if (len(found.shown), found.shown) < (len(known.shown), known.shown):
            located[found.key] = found
    merged = [
        ", ".join(display_name(rel) for rel, _ in names)
        for names in by_file.values()
        if len(names) > 1
    ]
    if merged:
        notes.append(
            f"{len(merged)} file(s) listed under several names in the CSV, boxes merged: "
            f"{'; '.join(merged[:5])}{' …' if len(merged) > 5 else ''}"
        )
    files = [
        (
            located[key],
            sorted(r for _, listed in names for r in listed),
        )
        for key, names in by_file.items()
    ]
    return files, skipped


def _csv_group(
    listed: list[tuple[int, dict[str, str]]], column: str | None
) -> tuple[str | None, str | None]:
    """The image's group, or why its rows disagree on it (rows without one do not count)."""
    if not column:
        return None, None
    found = {(row.get(column) or "").strip(): line for line, row in listed}
    found.pop("", None)
    if len(found) > 1:
        shown = ", ".join(f"{display_name(g)} on line {n}" for g, n in sorted(found.items()))
        return None, f"rows give different {column} values ({shown})"
    return next(iter(found), None), None


def from_csv(
    csv_path: Path, spec: DataSpec, notes: list[str]
) -> tuple[list[str], list[Sample], list, list]:
    """Rows ``path,label,x0,y0,x1,y1`` (a box each; an empty label: an image without boxes)."""
    rows = _csv_rows(csv_path, spec)
    labels = {line: _csv_label(csv_path, line, row, spec) for line, row in rows}
    classes = sorted({label for label in labels.values() if label})
    index = {c: i for i, c in enumerate(classes)}
    files, skipped = _csv_files(csv_path, rows, spec, notes)
    samples, dropped = [], []
    for found, listed in files:
        group, conflict = _csv_group(listed, spec.csv.group_column)
        if conflict:
            skipped.append({"path": found.shown, "reason": conflict})
            continue
        size = image_size(found.file)
        boxes: list[Box] = []
        for line, row in listed:
            if not labels[line]:
                continue  # the image's row without a box: a negative
            try:
                xyxy, reason = check_box([float(row[c]) for c in BOX_COLUMNS], size)
            except (TypeError, ValueError):
                xyxy, reason = [], "x0,y0,x1,y1 are not numbers"
            if reason:
                dropped.append(
                    {
                        "path": found.shown,
                        "reason": f"box skipped: {reason} (CSV line {line})",
                    }
                )
                continue
            x0, y0, x1, y1 = xyxy
            boxes.append((x0, y0, x1, y1, index[labels[line]]))
        samples.append(_sample(found, boxes, group, classes))
    return classes, _grouped(samples, [found for found, _ in files]), skipped, dropped


def build_detection_catalog(source: str | Path, spec: DataSpec) -> Catalog:
    """List, split and plan a detection source; deterministic for the same files and spec."""
    source = Path(source)
    if not source.is_file():
        raise CatalogError(f"data.source {source}: task: detect reads a COCO .json or a .csv file")
    kind = (
        spec.format
        if spec.format != "auto"
        else ("csv" if source.suffix.lower() == ".csv" else "coco")
    )
    read = from_csv if kind == "csv" else from_coco
    notes: list[str] = []
    classes, samples, skipped, dropped = read(source, spec, notes)
    samples.sort(key=lambda s: frame_order(s.rel))  # a video's frames in time order
    if not classes or not any(s.target for s in samples):
        raise CatalogError(f"{source}: no usable box (task: detect needs at least one)")
    unknown_aug = sorted(set(spec.augment) - set(classes) - {NO_BOXES})
    if unknown_aug:
        raise CatalogError(
            f"data.augment names class(es) {', '.join(unknown_aug)} not in the data (classes: {', '.join(classes)})"
        )
    samples = split_samples(samples, spec.split.validation, spec.split.seed, spec.split.stratify)
    samples = plan_copies(samples, spec)
    notes.insert(
        0,
        f"{sum(len(s.target or ()) for s in samples)} boxes, {sum(not s.target for s in samples)} images without a box",
    )
    return Catalog(classes, samples, skipped, notes, ignored=dropped)
