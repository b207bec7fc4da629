"""What to ingest for segmentation: images with their label maps.

``data.format: folders``: ``SOURCE/images/<name>.<ext>`` with ``SOURCE/masks/<name>.png`` (a
one-channel PNG, pixel value = class index, 255 = ignore) and ``SOURCE/labels.json``
(``{"0": "background", "1": "lung"}``; without it the values found are ``class_<v>``).
``data.format: coco``: polygons or RLE in each annotation's ``segmentation``, class 0 the
background, crowd regions (``iscrowd: 1``) ignored (255). The source may also name the folder's
``labels.json``.

A mask that cannot be used (missing, empty or undecodable, not one channel, another size than
its image, a value that names no class) skips its image with the reason; a COCO annotation
that cannot be drawn is dropped (listed) and its image kept. The split and augmentation plan are
the classification ones; an image's stratum (and ``data.augment`` key) is the rarest class it
shows, so rare classes spread over the splits.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from ...data.catalog import _unusable, _Walk, display_name, outside, plan_copies, read_coco
from ...data.coco import (
    coco_annotations,
    coco_categories,
    coco_images,
    coco_size,
    image_size,
    true_size,
)
from ...data.folds import assign_folds, split_samples
from ...data.frames import Listed, frame_order, frame_ref, locate, one_group_per_video
from ...data.sample import Catalog, CatalogError, Sample
from ...data.video import VIDEO_SUFFIXES
from ...spec.schema import DataSpec
from .info import IGNORE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
BACKGROUND = "background"  # class 0 of a COCO source (pixels no annotation covers)
MASK_MODES = ("L", "P", "1", "I", "I;16")  # one-channel PIL modes: a value per pixel


class MaskError(Exception):
    """Why a mask cannot be used (the image is skipped with it)."""


def read_mask(path: str | Path) -> np.ndarray:
    """A label map as HxW uint8, or ``MaskError`` (empty, undecodable, not one channel, values
    past 255). A palette PNG gives its indices (the palette only colours them)."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in MASK_MODES:
                raise MaskError(
                    f"mask is {image.mode}, not a one-channel label map (pixel value = class)"
                )
            array = np.asarray(image)
    except MaskError:
        raise
    except FileNotFoundError:
        raise MaskError("mask file not found") from None
    except Exception as exc:  # empty, truncated, not an image
        raise MaskError(f"mask cannot be decoded: {type(exc).__name__}: {exc}") from None
    if array.ndim != 2 or array.size == 0:
        raise MaskError(f"mask has shape {array.shape}, not height x width")
    if array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 255:
            raise MaskError(f"mask values {array.min()}..{array.max()} exceed 0..255")
        array = array.astype(np.uint8)
    return array


def check_values(mask: np.ndarray, classes: int) -> str | None:
    """Why ``mask`` holds a value that is no class index (nor 255, ignore), or None."""
    values = np.unique(mask)
    if values.tolist() == [IGNORE]:
        return f"mask is {IGNORE} (ignore) everywhere: nothing to learn from"
    bad = [int(v) for v in values if v >= classes and v != IGNORE]
    if bad:
        return (
            f"mask value(s) {', '.join(map(str, bad[:10]))} name no class (classes 0..{classes - 1}"
            f", {IGNORE} = ignore)"
        )
    return None


def read_labels(root: Path) -> list[str] | None:
    """``labels.json`` ({"0": "background", ...}: every value 0..K-1 named once), or None."""
    path = root / "labels.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not doc:
        raise CatalogError(f'{path}: expected an object {{"0": "background", "1": ...}}')
    try:
        named = {int(k): v for k, v in doc.items()}
    except ValueError:
        raise CatalogError(f"{path}: keys are mask values 0..254 (got {sorted(doc)})") from None
    if sorted(named) != list(range(len(named))) or len(named) >= IGNORE:
        raise CatalogError(
            f"{path}: keys must be the mask values 0..K-1 (K < {IGNORE}), got {sorted(named)}"
        )
    bad = [k for k, v in named.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise CatalogError(f"{path}: value {bad[0]} needs a non-empty class name")
    names = [display_name(named[k].strip()) for k in range(len(named))]
    if len(set(names)) != len(names):
        raise CatalogError(f"{path}: a class name is given twice")
    return names


def _stratum(present: set[int], seen: Counter, classes: list[str]) -> str:
    """The rarest class an image shows (by images showing it); class 0 when it shows no other."""
    others = [c for c in present if c != 0 and c < len(classes)]
    if not others:
        return classes[0]
    return classes[min(others, key=lambda c: (seen[c], c))]


def _mask_of(image_rel: Path) -> Path:
    return image_rel.with_suffix(".png")


def from_folders(
    root: Path, spec: DataSpec, notes: list[str]
) -> tuple[list[str], list[Sample], list, list]:
    """images/ + masks/ (+ labels.json): classes, samples (target: the mask's path), skipped,
    ignored (hidden files)."""
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise CatalogError(
                f"data.source {root}: task: segment reads SOURCE/images/<name>.<ext> and "
                f"SOURCE/masks/<name>.png; no {sub}/ folder"
            )
    named = read_labels(root)
    walk = _Walk(root, spec.follow_links)
    listed: list[tuple[str, Path, Path, str, np.ndarray]] = []
    for path in walk.files(root / "images"):
        file = Path(path)
        inside = file.relative_to(root / "images")
        if file.suffix.lower() in VIDEO_SUFFIXES:
            listed += _video_masks(root, walk, file, inside)
            continue
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            walk.skip(path, f"not an image ({', '.join(IMAGE_SUFFIXES)})")
            continue
        mask_path = root / "masks" / _mask_of(inside)
        shown_mask = f"masks/{display_name(str(_mask_of(inside)))}"
        mask, reason = _usable_mask(root, walk, mask_path, shown_mask, image_size(file), "image")
        if mask is None:
            walk.skip(path, reason)
            continue
        listed.append((walk.rel(path), file, mask_path, shown_mask, mask))
    if named is None:
        found = {int(v) for *_, mask in listed for v in np.unique(mask) if v != IGNORE}
        named = [f"class_{v}" for v in range(max(found, default=0) + 1)]
        notes.append(f"no labels.json: classes named by mask value ({', '.join(named)})")
    presence: list[tuple[str, Path, Path, set[int]]] = []
    for rel, image, mask_path, shown_mask, mask in listed:
        if why := check_values(mask, len(named)):
            walk.skip(image, f"{shown_mask}: {why}")
            continue
        present = {int(v) for v in np.unique(mask) if v != IGNORE}
        presence.append((rel, image, mask_path, present))
    seen = Counter(c for *_, present in presence for c in present)
    samples = [
        Sample(
            str(image.resolve()),
            rel,
            _stratum(present, seen, named),
            target=str(mask_path.resolve()),
        )
        for rel, image, mask_path, present in presence
    ]
    notes.extend(walk.notes)
    videos = {rel: walk.rel(image) for rel, image, *_ in presence if frame_ref(rel)}
    return named, one_group_per_video(samples, videos), walk.skipped, walk.ignored


def _video_masks(
    root: Path, walk: _Walk, video: Path, inside: Path
) -> list[tuple[str, Path, Path, str, np.ndarray]]:
    """A video's labelled frames: ``masks/<video>/t=<seconds>.png`` (or ``frame=<n>.png``)
    each names one frame and is its mask; a video without that folder is skipped, and so is
    a folder that leads out of ``masks/`` (not listed: its names are not the data's)."""
    folder = root / "masks" / inside
    shown = f"masks/{display_name(str(inside))}/"
    if why := outside(folder, root / "masks", walk.follow_links):
        walk.skip(video, f"mask folder {shown}: {why}")
        return []
    if not folder.is_dir():
        walk.skip(video, f"a video: each labelled frame's mask goes in {shown}t=<seconds>.png")
        return []
    size = image_size(video)
    found, named = [], dict[str, str]()  # named: frame name -> the mask that named it first
    for mask_path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        ref = frame_ref(f"{walk.rel(video)}#{mask_path.stem}")
        where = f"{shown}{display_name(mask_path.name)}"
        if ref is None or mask_path.suffix != ".png":
            walk.skip(video, f"{where}: not t=<seconds>.png or frame=<number>.png")
            continue
        if ref.name in named:  # t=1.png and t=1.000.png: one frame, one record name
            walk.skip(video, f"{where}: names the frame of {named[ref.name]} too; keep one")
            continue
        named[ref.name] = where
        mask, why = _usable_mask(root, walk, mask_path, where, size, "video")
        if mask is None:
            walk.skip(video, why)
            continue
        found.append((ref.name, video, mask_path, where, mask))
    return found


def _usable_mask(
    root: Path, walk: _Walk, path: Path, shown: str, size: tuple[int, int] | None, of: str
) -> tuple[np.ndarray | None, str]:
    """(the values of the mask at ``path``, "") or (None, why it cannot be used: unreadable
    or outside the masks folder, not a label map, another size than its ``of`` (image or
    video)). Only the values are kept: a catalog of 10,000 labelled frames of a 1080p video
    holds 10,000 short value lists, not 20 GB of masks."""
    if why := _unusable(path, root / "masks", walk.follow_links):
        return None, f"mask {shown}: {why}"
    # the header's size first: a 60000x60000 PNG of zeros is a few MB on disk and 3.6 GB
    # decoded (decode.py lifts PIL's own pixel cap), here on the login node
    if size is not None and (stated := image_size(path)) is not None and size != tuple(stated):
        return None, f"{shown} is {stated[0]}x{stated[1]}, its {of} {size[0]}x{size[1]}"
    try:
        mask = read_mask(path)
    except MaskError as exc:
        return None, f"{shown}: {exc}"
    if size is not None and size != (mask.shape[1], mask.shape[0]):
        return None, f"{shown} is {mask.shape[1]}x{mask.shape[0]}, its {of} {size[0]}x{size[1]}"
    return np.unique(mask), ""


def _segmentation(ann: dict) -> str | None:
    """Why the annotation's ``segmentation`` cannot be drawn, or None (polygons: lists of at
    least 3 x,y points; RLE: {counts, size})."""
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        if not seg:
            return "empty segmentation"
        for poly in seg:
            if (
                not isinstance(poly, list)
                or len(poly) < 6
                or len(poly) % 2
                or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in poly
                )
            ):
                return "a polygon is not a list of at least 3 x,y number pairs"
        return None
    if isinstance(seg, dict):
        size = seg.get("size")
        if not (
            isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)
        ) or not isinstance(seg.get("counts"), (list, str)):
            return "RLE needs counts and size [height, width]"
        return None
    return "no segmentation (polygons or RLE)"


def _locate_once(
    base: Path, rel: str, follow_links: bool, seen: dict[tuple[Path, str], str], where: str
) -> tuple[Listed | None, str | None]:
    """``locate``, and a file or a video's frame listed by an earlier entry refused
    (``clip.mp4#t=1`` and ``clip.mp4#t=1.000``: one frame, one record name)."""
    found, why = locate(base, rel, follow_links)
    if found is not None and found.key in seen:
        return None, f"the file or frame of {seen[found.key]} too; list it once"
    if found is not None:
        seen[found.key] = where
    return found, why


def from_coco(
    json_path: Path, spec: DataSpec, notes: list[str]
) -> tuple[list[str], list[Sample], list, list]:
    """COCO JSON: classes (background, then category names by id), samples (target: (height,
    width, ((class, segmentation JSON, crowd), ...))), skipped files, dropped annotations."""
    doc = read_coco(json_path)
    names, index = coco_categories(json_path, doc)
    # class 0 is what no annotation covers: "background", a category of that name included
    classes = [BACKGROUND, *(n for n in names if n != BACKGROUND)]
    index = {cid: classes.index(names[i]) for cid, i in index.items()}
    images = coco_images(json_path, doc)
    per_image, skipped = coco_annotations(json_path, doc, {i for _, i, _, _ in images})
    base = json_path.parent / spec.coco.image_dir
    listed, dropped, videos = [], [], {}
    entries: dict[tuple[Path, str], str] = {}  # a file, or a frame of a video -> its entry
    for where, image_id, rel, image in images:
        found, why = _locate_once(base, rel, spec.follow_links, entries, where)
        if found is None:
            skipped.append(
                {"path": display_name(rel), "reason": f"{why} (COCO image id {image_id})"}
            )
            continue
        shown = found.shown
        if found.video:
            videos[shown] = found.video
        size = true_size(coco_size(json_path, where, image), found.file, shown, notes)
        if size is None:
            skipped.append(
                {
                    "path": shown,
                    "reason": f"COCO image id {image_id}: width and height needed to draw its masks",
                }
            )
            continue
        width, height = int(size[0]), int(size[1])
        drawn = []
        for ann_where, ann in per_image.get(image_id, []):
            reason = (
                f"unknown category_id {ann['category_id']}"
                if ann["category_id"] not in index
                else _segmentation(ann)
            )
            if reason:
                dropped.append(
                    {
                        "path": shown,
                        "reason": f"mask skipped: {reason} (COCO annotation id {ann.get('id')}, {ann_where})",
                    }
                )
                continue
            crowd = ann.get("iscrowd") in (1, True)
            drawn.append((index[ann["category_id"]], json.dumps(ann["segmentation"]), crowd))
        group = image.get(spec.coco.group_field) if spec.coco.group_field else None
        group = None if group in (None, "") else display_name(str(group))
        listed.append((found.file, shown, group, (height, width, tuple(drawn))))
    seen = Counter(c for *_, t in listed for c in {d[0] for d in t[2] if not d[2]})
    samples = [
        Sample(
            str(file.resolve()),
            shown,
            _stratum({d[0] for d in target[2] if not d[2]}, seen, classes),
            group,
            target=target,
        )
        for file, shown, group, target in listed
    ]
    return classes, one_group_per_video(samples, videos), skipped, dropped


def resolve(source: Path, spec: DataSpec) -> tuple[str, Path]:
    """(folders | coco, the folder or JSON read): a folder is folders; a JSON with ``images`` is
    COCO; a label map JSON beside images/ and masks/ means its folder."""
    if source.is_dir():
        if spec.format == "coco":
            raise CatalogError(f"data.source {source}: data.format coco reads a .json file")
        return "folders", source
    if not source.is_file():
        raise CatalogError(f"data.source {source}: not found")
    if spec.format == "csv":
        raise CatalogError("task: segment reads folders or coco (data.format)")
    if (
        spec.format != "coco"
        and (source.parent / "images").is_dir()
        and (source.parent / "masks").is_dir()
    ):
        try:
            is_coco = isinstance(json.loads(source.read_bytes()).get("images"), list)
        except Exception:
            is_coco = False
        if not is_coco:
            return "folders", source.parent
    if spec.format == "folders":
        raise CatalogError(
            f"data.source {source}: data.format folders reads a folder of images/ and masks/"
        )
    return "coco", source


def build_segmentation_catalog(source: str | Path, spec: DataSpec) -> Catalog:
    """List, split and plan a segmentation source; deterministic for the same files and spec."""
    kind, where = resolve(Path(source), spec)
    notes: list[str] = []
    read = from_folders if kind == "folders" else from_coco
    classes, samples, skipped, ignored = read(where, spec, notes)
    samples.sort(key=lambda s: frame_order(s.rel))  # a video's frames in time order
    if not samples:
        raise CatalogError(f"{where}: no image with a usable mask (task: segment needs one)")
    if len(classes) < 2:
        raise CatalogError(f"{where}: one class ({classes[0]}); segmentation needs two or more")
    unknown_aug = sorted(set(spec.augment) - set(classes))
    if unknown_aug:
        raise CatalogError(
            f"data.augment names class(es) {', '.join(unknown_aug)} not in the data "
            f"(classes: {', '.join(classes)})"
        )
    if spec.split.folds:  # group folds, stratified by each image's main foreground class
        samples = assign_folds(samples, spec.split)
    else:
        samples = split_samples(
            samples, spec.split.validation, spec.split.seed, spec.split.stratify
        )
    samples = plan_copies(samples, spec)
    notes.insert(0, f"{len(samples)} images with masks of {len(classes)} classes ({kind})")
    return Catalog(classes, samples, skipped, notes, ignored=ignored)
