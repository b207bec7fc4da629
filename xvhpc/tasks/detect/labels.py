"""A detector's predictions as review items: Label Studio ``rectanglelabels`` (x, y, width,
height in percent of the image) and COCO boxes in pixels (torch-free: reads predictions.jsonl
and each image's header for its size).

Uncertainty is ``1 - mean box confidence``; an image with no box at the deployed threshold
counts as most uncertain (1.0): only a reviewer can tell a true negative from a miss.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...data.coco import image_size
from ...data.labelstudio import TO_NAME, Review
from ...data.video import VIDEO_SUFFIXES

FROM_NAME = "label"  # <RectangleLabels name="label" toName="image"> in the labelling config


def _items(boxes: list[dict], width: int, height: int) -> tuple[list[dict], list[dict]]:
    """(Label Studio result items, COCO annotations) of one image's boxes."""
    result, annotations = [], []
    for b in boxes:
        x0, y0, x1, y1 = b["box"]
        value = {
            "x": 100 * x0 / width,
            "y": 100 * y0 / height,
            "width": 100 * (x1 - x0) / width,
            "height": 100 * (y1 - y0) / height,
            "rotation": 0,
            "rectanglelabels": [b["label"]],
        }
        result.append(
            {
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "rectanglelabels",
                "original_width": width,
                "original_height": height,
                "value": value,
                "score": b["confidence"],
            }
        )
        bbox = [round(v, 3) for v in (x0, y0, x1 - x0, y1 - y0)]
        annotations.append({"label": b["label"], "bbox": bbox, "score": b["confidence"]})
    return result, annotations


def reviews(
    predictions: Path, files: dict[str, str], classes: list[str]
) -> tuple[list[Review], int]:
    """(a review per predicted image in input order, the number of skipped rows); ``files``:
    each input's path by the name predictions give it. An image whose size cannot be read
    any more is counted as skipped."""
    out, skipped = [], 0
    for line in predictions.read_text().splitlines():
        row = json.loads(line)
        # the file read, not the name's text before a "#": a video may be named a#b.mp4 and
        # an image clip.mp4#1.png
        video = Path(files.get(row["path"], "")).suffix.lower() in VIDEO_SUFFIXES
        # a video's boxes (or a frame's) have no image file to review on: counted as skipped
        size = None if "skipped" in row or video else image_size(Path(files[row["path"]]))
        if size is None:
            skipped += 1
            continue
        result, annotations = _items(row["boxes"], *size)
        scores = [b["confidence"] for b in row["boxes"]]
        mean = sum(scores) / len(scores) if scores else 0.0
        uncertainty = 1.0 - mean if scores else 1.0
        out.append(Review(row["path"], mean, uncertainty, result, annotations, *size))
    return out, skipped
