"""The labelling loop's files, task-blind: pre-annotations for review (Label Studio's task
import JSON with ``predictions``, or COCO JSON, which CVAT imports) and the reader of Label
Studio's JSON export, which turns the reviewed tasks into a COCO document so the COCO readers
of every task (one category per image, boxes) read the corrections unchanged.

Formats followed (Label Studio docs): "Import pre-annotated data into Label Studio"
(``predictions``: ``model_version``, ``score``, ``result``) and "Label Studio JSON format of
annotated tasks" (``annotations[].result``, ``was_cancelled``); a ``rectanglelabels`` value is
``x, y, width, height`` in percent of ``original_width`` / ``original_height``. A task's own
result items (``choices``, ``rectanglelabels``) are made by the task (``tasks/<name>/labels.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from .sample import CatalogError

TO_NAME = "image"  # the <Image name="image" value="$image"/> of the labelling config
LOCAL_FILES = "/data/local-files/?d="  # Label Studio's local-files storage URL prefix
PATH_KEY = "xvhpc_path"  # the input's path, kept in each task's data (exports keep it)
ORDERS = ("input", "uncertainty")  # xvhpc predict --order
FORMATS = ("labelstudio", "coco")  # xvhpc predict --format
SLACK = 0.5  # percent a rectangle may overshoot the image (rounding in the labelling tool)


@dataclass
class Review:
    """One predicted image for a reviewer: its Label Studio result items and COCO annotations,
    how confident the model was (``score``) and how unsure (``uncertainty``, 0 sure → 1)."""

    rel: str  # the input's path below the predicted folder (as predictions name it)
    score: float
    uncertainty: float
    result: list[dict[str, Any]]
    annotations: list[dict[str, Any]]  # COCO: {"label", "bbox"?, "score"}; bbox in pixels
    width: int | None = None
    height: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def ordered(reviews: list[Review], order: str) -> list[Review]:
    """Input order, or least confident first (``uncertainty``: active learning)."""
    if order == "uncertainty":
        return sorted(reviews, key=lambda r: (-r.uncertainty, r.rel))
    return list(reviews)


def labelstudio_tasks(reviews: list[Review], model_version: str) -> list[dict[str, Any]]:
    """Label Studio's task import JSON: ``data.image`` as a local-files URL relative to the
    predicted folder (the storage root), and one prediction per task."""
    return [
        {
            "data": {"image": LOCAL_FILES + quote(r.rel), PATH_KEY: r.rel},
            "predictions": [
                {"model_version": model_version, "score": round(r.score, 6), "result": r.result}
            ],
        }
        for r in reviews
    ]


def coco_document(reviews: list[Review], classes: list[str]) -> dict[str, Any]:
    """COCO JSON of the predictions (``score`` kept on each annotation); CVAT imports the
    boxes; an annotation without ``bbox`` is a whole-image label (xvhpc's COCO reader)."""
    ids = {c: i + 1 for i, c in enumerate(classes)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for n, r in enumerate(reviews):
        image: dict[str, Any] = {"id": n + 1, "file_name": r.rel}
        if r.width and r.height:
            image |= {"width": r.width, "height": r.height}
        images.append(image)
        for a in r.annotations:
            ann = {"id": len(annotations) + 1, "image_id": n + 1, "category_id": ids[a["label"]]}
            ann["score"] = a["score"]
            if "bbox" in a:
                w, h = a["bbox"][2], a["bbox"][3]
                ann |= {"bbox": a["bbox"], "area": round(w * h, 2), "iscrowd": 0}
            annotations.append(ann)
    categories = [{"id": i, "name": c} for c, i in ids.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def is_export(doc: object) -> bool:
    """Whether a JSON document is a Label Studio export: a list of tasks with ``data``."""
    return isinstance(doc, list) and all(isinstance(t, dict) and "data" in t for t in doc)


def _file_of(json_path: Path, where: str, data: dict[str, Any]) -> str:
    """The image path of a task: ``xvhpc_path`` (what predict wrote), else the local-files
    URL's path, else ``data.image`` as a plain relative path; a web URL or an upload is refused."""
    if isinstance(data.get(PATH_KEY), str):
        return data[PATH_KEY]
    image = data.get("image")
    if not isinstance(image, str) or not image:
        raise CatalogError(f"{json_path}: {where}.data.image: missing (a path or local-files URL)")
    if image.startswith(LOCAL_FILES):
        return unquote(image[len(LOCAL_FILES) :])
    if "://" in image or image.startswith("/data/"):
        raise CatalogError(
            f"{json_path}: {where}.data.image: {image[:80]!r} is not a local file (use "
            "Label Studio's local-files storage: /data/local-files/?d=PATH)"
        )
    return image


def _reviewed(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's last annotation not cancelled (None: not reviewed)."""
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    done = [a for a in done if not a.get("was_cancelled")]
    return done[-1] if done else None


def _percent(value: dict[str, Any], key: str) -> float:
    """A rectangle's coordinate in percent of the image: a finite number from 0 to 100
    (a box outside was silently dropped by the COCO readers: a labelled image read as empty)."""
    number = value.get(key)
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise ValueError(f"value.{key}: expected a number, got {number!r:.40}")
    if not (math.isfinite(number) and -SLACK <= number <= 100 + SLACK):
        raise ValueError(f"value.{key}: {number!r:.40} is not a percentage of the image (0 to 100)")
    return float(number)


def _items(item: dict[str, Any], where: str) -> list[tuple[str, list[float] | None, int, int]]:
    """(label, box in pixels or None, width, height) of one result item."""
    value = item.get("value") or {}
    kind = item.get("type")
    if kind == "choices":
        return [(str(c), None, 0, 0) for c in value.get("choices", [])]
    if kind == "rectanglelabels":
        w, h = item.get("original_width"), item.get("original_height")
        if not isinstance(w, int) or not isinstance(h, int) or w < 1 or h < 1:
            raise ValueError("original_width and original_height: expected pixel counts")
        x, y = _percent(value, "x") * w / 100, _percent(value, "y") * h / 100
        bw, bh = _percent(value, "width") * w / 100, _percent(value, "height") * h / 100
        if bw <= 0 or bh <= 0 or x + bw > w * (1 + SLACK / 100) or y + bh > h * (1 + SLACK / 100):
            raise ValueError("the rectangle is empty or reaches outside the image")
        box = [round(v, 3) for v in (x, y, bw, bh)]
        return [(str(label), box, w, h) for label in value.get("rectanglelabels", [])]
    raise ValueError(f"type {kind!r} is not read (choices, rectanglelabels)")


def coco_of_export(json_path: Path, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """A Label Studio JSON export as COCO: each reviewed task an image (its data fields kept,
    for ``data.coco.group_field``), each choice or rectangle an annotation. Tasks nobody
    reviewed (no annotation, or all cancelled) are left out: they hold no human label."""
    names: dict[str, int] = {}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for t, task in enumerate(tasks):
        where = f"[{t}]"
        review = _reviewed(task)
        if review is None:
            continue
        data = task["data"] if isinstance(task["data"], dict) else {}
        image: dict[str, Any] = {k: v for k, v in data.items() if k not in ("image", PATH_KEY)}
        image |= {"id": t, "file_name": _file_of(json_path, where, data)}
        for r, item in enumerate(review.get("result") or []):
            try:
                found = _items(item if isinstance(item, dict) else {}, where)
            except ValueError as exc:
                raise CatalogError(f"{json_path}: {where}.annotations.result[{r}]: {exc}") from None
            for label, box, w, h in found:
                ann: dict[str, Any] = {"id": len(annotations) + 1, "image_id": t}
                ann["category_id"] = names.setdefault(label, len(names) + 1)
                if box is not None:
                    image |= {"width": w, "height": h}
                    ann |= {"bbox": box, "area": box[2] * box[3], "iscrowd": 0}
                annotations.append(ann)
        images.append(image)
    categories = [{"id": i, "name": n} for n, i in sorted(names.items())]
    return {"images": images, "annotations": annotations, "categories": categories}
