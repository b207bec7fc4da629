"""``xvhpc demo-data --task detect``: bright shapes with boxes on a dark, noisy background (COCO JSON)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("red_box", "green_box")  # category ids 1, 2: the channel a box is bright in


def shapes(size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[list[int], int]]]:
    """One image and its (x, y, width, height) boxes with category ids; 1 in 10 has none.
    Boxes do not overlap (two touching boxes of one colour would be one blob)."""
    image = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
    boxes: list[tuple[list[int], int]] = []
    for _ in range(0 if rng.random() < 0.1 else int(rng.integers(1, 3))):
        for _attempt in range(20):
            w, h = (int(v) for v in rng.integers(size // 6, size // 2, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            if all(
                x >= bx + bw + 1 or bx >= x + w + 1 or y >= by + bh + 1 or by >= y + h + 1
                for (bx, by, bw, bh), _ in boxes
            ):
                break
        else:
            continue
        category = int(rng.integers(1, len(CLASSES) + 1))
        image[y : y + h, x : x + w, category - 1] = 255
        boxes.append(([x, y, w, h], category))
    return image, boxes


def make_detection_dataset(
    out: str | Path, images: int = 120, size: int = 64, seed: int = 0
) -> Path:
    """PNG images and ``annotations.json`` (COCO, one ``group`` field per image) under ``out``."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    doc: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)],
    }
    for n in range(images):
        image, boxes = shapes(size, rng)
        name = f"images/shape{n:05d}.png"
        Image.fromarray(image).save(out / name)
        doc["images"].append(
            {"id": n, "file_name": name, "width": size, "height": size, "group": f"g{n // 2}"}
        )
        for bbox, category in boxes:
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": n,
                    "category_id": category,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    path = out / "annotations.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


def main(args: argparse.Namespace) -> int:
    path = make_detection_dataset(
        args.out, args.per_class * len(CLASSES), args.size or 64, args.seed
    )
    print(
        f"wrote {args.per_class * len(CLASSES)} images with boxes of {len(CLASSES)} classes: {path}"
    )
    return 0
