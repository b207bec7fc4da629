"""COCO JSON read for any task: categories, images, annotations and each image's true size, each
problem named by file and entry (detection's boxes and segmentation's masks both start here)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from .catalog import display_name
from .frames import video_size
from .sample import CatalogError
from .video import VIDEO_SUFFIXES


def image_size(file: Path) -> tuple[int, int] | None:
    """Width and height from the file header (None where PIL cannot tell: DICOM); a video's
    frame size from its container."""
    if file.suffix.lower() in VIDEO_SUFFIXES:
        return video_size(file)
    try:
        with Image.open(file) as image:
            return image.size
    except Exception:
        return None


def _id(value: object) -> bool:
    """COCO ids are integers or strings (not booleans, lists or numbers with a fraction)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def number(value: object) -> float | None:
    """A JSON number as a float (10**400 as infinity), None for anything else (strings, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer past float range: as unusable as infinity
        return float("inf") if value > 0 else float("-inf")


def _entries(json_path: Path, doc: dict, key: str) -> list[tuple[str, dict]]:
    """The objects of ``doc[key]`` with their ``key[i]`` names, refusing anything else."""
    listed = [(f"{key}[{i}]", entry) for i, entry in enumerate(doc[key])]
    for where, entry in listed:
        if not isinstance(entry, dict):
            raise CatalogError(f"{json_path}: {where}: expected an object, got {entry!r:.60}")
    return listed


def _field(
    json_path: Path, where: str, entry: dict, key: str, ok: Callable[[object], bool], expected: str
) -> object:
    """``entry[key]`` when ``ok`` accepts it, else a CatalogError naming file, entry and key."""
    if key not in entry:
        raise CatalogError(f"{json_path}: {where}.{key}: missing ({expected})")
    if not ok(entry[key]):
        raise CatalogError(
            f"{json_path}: {where}.{key}: expected {expected}, got {entry[key]!r:.60}"
        )
    return entry[key]


def _name(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _repeated(values: list) -> list:
    return sorted({str(v) for v, n in Counter(values).items() if n > 1})


def coco_categories(json_path: Path, doc: dict) -> tuple[list[str], dict[object, int]]:
    """Class names in id order and each category id's class index; a repeated id or name
    would relabel boxes silently, so both are refused."""
    cats = []
    for where, c in _entries(json_path, doc, "categories"):
        cid = _field(json_path, where, c, "id", _id, "an integer or string id")
        name = _field(json_path, where, c, "name", _name, "a non-empty string")
        cats.append((cid, display_name(str(name).strip())))
    for what, values in (("id", [c for c, _ in cats]), ("name", [n for _, n in cats])):
        if twice := _repeated(values):
            raise CatalogError(f"{json_path}: categories: {what} {', '.join(twice)} listed twice")
    cats.sort(key=lambda c: (isinstance(c[0], str), c[0]))
    return [n for _, n in cats], {cid: i for i, (cid, _) in enumerate(cats)}


def true_size(
    declared: tuple[float, float] | None, file: Path, shown: str, notes: list[str]
) -> tuple[float, float] | None:
    """The size boxes are clipped to: the file's own (its header, no decode) when it disagrees
    with COCO's width/height, with a note; a tool that wrote the EXIF-rotated size would
    otherwise clip every box silently (issue 23 finding 4)."""
    real = image_size(file)
    if real is None:  # DICOM and the like: COCO's word stands
        return declared
    if declared is not None and tuple(declared) != (float(real[0]), float(real[1])):
        notes.append(
            f"{shown}: COCO width/height {declared[0]:g}x{declared[1]:g} differ from the "
            f"file's {real[0]}x{real[1]}: its boxes are clipped to the file's size"
        )
    return float(real[0]), float(real[1])


def coco_size(json_path: Path, where: str, image: dict) -> tuple[float, float] | None:
    """The image's declared width and height (positive numbers), None where not given."""
    sizes: list[float] = []
    for key in ("width", "height"):
        if key in image:
            sizes.append(
                number(
                    _field(
                        json_path,
                        where,
                        image,
                        key,
                        lambda v: (n := number(v)) is not None and 0 < n < float("inf"),
                        "a positive number",
                    )
                )
                or 0.0
            )
    return (sizes[0], sizes[1]) if len(sizes) == 2 else None


def coco_images(json_path: Path, doc: dict) -> list[tuple[str, object, str, dict]]:
    """(where, id, file_name, image) per image; a repeated id would hand one image's boxes
    to another, so it is refused."""
    images = []
    for where, im in _entries(json_path, doc, "images"):
        image_id = _field(json_path, where, im, "id", _id, "an integer or string id")
        rel = _field(json_path, where, im, "file_name", _name, "a non-empty string")
        images.append((where, image_id, str(rel), im))
    if twice := _repeated([image_id for _, image_id, _, _ in images]):
        raise CatalogError(f"{json_path}: images: id {', '.join(twice)} listed twice")
    return images


def coco_annotations(
    json_path: Path, doc: dict, image_ids: set[object]
) -> tuple[dict[object, list[tuple[str, dict]]], list[dict[str, str]]]:
    """Annotations by image id, and those whose image_id names no image (listed as skipped)."""
    per_image: dict[object, list[tuple[str, dict]]] = defaultdict(list)
    dangling = []
    for where, ann in _entries(json_path, doc, "annotations"):
        image_id = _field(json_path, where, ann, "image_id", _id, "an integer or string id")
        _field(json_path, where, ann, "category_id", _id, "an integer or string id")
        if "iscrowd" in ann:
            _field(json_path, where, ann, "iscrowd", lambda v: v in (0, 1), "0 or 1")
        if image_id in image_ids:
            per_image[image_id].append((where, ann))
        else:
            dangling.append(
                {
                    "path": f"<{where}>",
                    "reason": f"annotation for image_id {image_id!r}, which no image has "
                    f"(COCO annotation id {ann.get('id')})",
                }
            )
    return per_image, dangling
