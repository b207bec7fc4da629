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

from PIL import Image

from ..data.catalog import (
    Catalog,
    CatalogError,
    Sample,
    _unusable,
    display_name,
    plan_copies,
    read_coco,
    split_samples,
)
from ..spec.schema import DataSpec

NO_BOXES = "(no boxes)"  # the stratum and count key of images without a box
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
Box = tuple[float, float, float, float, int]


def _image_size(file: Path) -> tuple[int, int] | None:
    """Width and height from the file header (None where PIL cannot tell: DICOM)."""
    try:
        with Image.open(file) as image:
            return image.size
    except Exception:
        return None


def check_box(xyxy: list[float], size: tuple[int, int] | None) -> tuple[list[float], str | None]:
    """The box clipped to the image, or why it is unusable."""
    x0, y0, x1, y1 = xyxy
    if not all(v == v and abs(v) != float("inf") for v in xyxy):
        return xyxy, "not a finite number"
    if x1 <= x0 or y1 <= y0:
        return xyxy, "zero or negative area"
    if size is not None:
        width, height = size
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            return xyxy, f"outside the image ({width}x{height})"
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return [x0, y0, x1, y1], None


def _sample(
    file: Path, rel: str, boxes: list[Box], group: str | None, classes: list[str]
) -> Sample:
    counts = Counter(b[4] for b in boxes)
    label = classes[max(sorted(counts), key=counts.__getitem__)] if boxes else NO_BOXES
    return Sample(str(file.resolve()), display_name(rel), label, group, boxes=tuple(boxes))


def from_coco(json_path: Path, spec: DataSpec) -> tuple[list[str], list[Sample], list, list]:
    """Classes (category names by id), samples with boxes, skipped files, dropped boxes."""
    doc = read_coco(json_path)
    try:
        cats = sorted((c["id"], display_name(str(c["name"]))) for c in doc["categories"])
        classes = [name for _, name in cats]
        index = {cid: i for i, (cid, _) in enumerate(cats)}
        per_image: dict[object, list[dict]] = defaultdict(list)
        for ann in doc["annotations"]:
            per_image[ann["image_id"]].append(ann)
        images = [(im["id"], str(im["file_name"]), im) for im in doc["images"]]
    except (KeyError, TypeError) as exc:
        raise CatalogError(f"{json_path}: COCO entry without the field {exc}") from None
    base = json_path.parent / spec.coco.image_dir
    samples, skipped, dropped = [], [], []
    for image_id, rel, image in images:
        if why := _unusable(base / rel):
            skipped.append(
                {"path": display_name(rel), "reason": f"{why} (COCO image id {image_id})"}
            )
            continue
        size = (image["width"], image["height"]) if "width" in image and "height" in image else None
        boxes: list[Box] = []
        for ann in per_image.get(image_id, []):
            where = f"COCO annotation id {ann.get('id')}"
            reason = None
            if ann.get("category_id") not in index:
                reason = f"unknown category_id {ann.get('category_id')}"
            elif ann.get("iscrowd"):
                reason = "crowd region (iscrowd: 1)"
            else:
                try:
                    x, y, w, h = (float(v) for v in ann["bbox"])
                except (KeyError, TypeError, ValueError):
                    x = y = w = h = 0.0
                    reason = "no bbox [x, y, width, height]"
                xyxy, why = check_box([x, y, x + w, y + h], size)
                reason = reason or why
            if reason:
                dropped.append(
                    {"path": display_name(rel), "reason": f"box skipped: {reason} ({where})"}
                )
                continue
            x0, y0, x1, y1 = xyxy
            boxes.append((x0, y0, x1, y1, index[ann["category_id"]]))
        group = image.get(spec.coco.group_field) if spec.coco.group_field else None
        group = None if group in (None, "") else display_name(str(group))
        samples.append(_sample(base / rel, rel, boxes, group, classes))
    return classes, samples, skipped, dropped


def _csv_rows(csv_path: Path, spec: DataSpec) -> list[tuple[int, dict[str, str]]]:
    text = csv_path.read_bytes().decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text, newline=""))
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
    return list(enumerate(reader, start=2))


def from_csv(csv_path: Path, spec: DataSpec) -> tuple[list[str], list[Sample], list, list]:
    """Rows ``path,label,x0,y0,x1,y1`` (a box each; an empty label: an image without boxes)."""
    cfg = spec.csv
    rows = _csv_rows(csv_path, spec)
    classes = sorted(
        {
            display_name(
                cfg.label_map.get(r[cfg.label_column].strip(), r[cfg.label_column].strip())
            )
            for _, r in rows
            if (r.get(cfg.label_column) or "").strip()
        }
    )
    index = {c: i for i, c in enumerate(classes)}
    by_file: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
    for line, row in rows:
        by_file[(row.get(cfg.path_column) or "").strip()].append((line, row))
    samples, skipped, dropped = [], [], []
    for rel, listed in sorted(by_file.items()):
        file = csv_path.parent / rel
        why = "no path" if not rel else _unusable(file)
        if why:
            skipped.append(
                {
                    "path": display_name(rel) or "<empty>",
                    "reason": f"{why} (CSV line {listed[0][0]})",
                }
            )
            continue
        size = _image_size(file)
        boxes: list[Box] = []
        for line, row in listed:
            label = (row.get(cfg.label_column) or "").strip()
            if not label:
                continue  # the image's row without a box: a negative
            try:
                xyxy, reason = check_box([float(row[c]) for c in BOX_COLUMNS], size)
            except (TypeError, ValueError):
                xyxy, reason = [], "x0,y0,x1,y1 are not numbers"
            if reason:
                dropped.append(
                    {
                        "path": display_name(rel),
                        "reason": f"box skipped: {reason} (CSV line {line})",
                    }
                )
                continue
            x0, y0, x1, y1 = xyxy
            boxes.append((x0, y0, x1, y1, index[display_name(cfg.label_map.get(label, label))]))
        group = (
            (listed[0][1].get(cfg.group_column) or "").strip() or None if cfg.group_column else None
        )
        samples.append(_sample(file, rel, boxes, group, classes))
    return classes, samples, skipped, dropped


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
    classes, samples, skipped, dropped = read(source, spec)
    samples.sort(key=lambda s: s.rel)
    if not classes or not any(s.boxes for s in samples):
        raise CatalogError(f"{source}: no usable box (task: detect needs at least one)")
    unknown_aug = sorted(set(spec.augment) - set(classes) - {NO_BOXES})
    if unknown_aug:
        raise CatalogError(
            f"data.augment names class(es) {', '.join(unknown_aug)} not in the data (classes: {', '.join(classes)})"
        )
    samples = split_samples(samples, spec.split.validation, spec.split.seed, spec.split.stratify)
    samples = plan_copies(samples, spec)
    notes = [
        f"{sum(len(s.boxes or ()) for s in samples)} boxes, {sum(not s.boxes for s in samples)} images without a box"
    ]
    return Catalog(classes, samples, skipped, notes, ignored=dropped)
