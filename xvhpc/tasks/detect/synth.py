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


FPS, FRAMES, EVERY = 8, 16, 2  # demo videos: 2 s at 8 fps, every 2nd frame labelled


def _moved(bbox: list[int], dx: int, dy: int, size: int) -> list[int] | None:
    """A box panned by (dx, dy) and clipped to the frame; None when less than half shows."""
    x, y, w, h = bbox
    x0, y0 = max(0, x + dx), max(0, y + dy)
    x1, y1 = min(size, x + dx + w), min(size, y + dy + h)
    if (x1 - x0) * (y1 - y0) < 0.5 * w * h or x1 <= x0 or y1 <= y0:
        return None
    return [x0, y0, x1 - x0, y1 - y0]


def make_detection_videos(out: str | Path, videos: int = 24, size: int = 64, seed: int = 0) -> Path:
    """``videos/clipNNN.mp4`` (the shapes of one image, panning 1-2 pixels a frame) and
    ``annotations.json``: COCO whose images are labelled frames, ``clipNNN.mp4#t=<seconds>``."""
    from ...data.synth import encode_video, pan

    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    doc: dict = {"images": [], "annotations": [], "categories": []}
    doc["categories"] = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    for n in range(videos):
        image, boxes = shapes(size, rng)
        dx, dy = (int(v) for v in rng.choice([-2, -1, 1, 2], 2))
        name = f"videos/clip{n:03d}.mp4"
        encode_video(out / name, (pan(image, dx * i, dy * i, 20) for i in range(FRAMES)), FPS)
        for i in range(0, FRAMES, EVERY):
            image_id = len(doc["images"])
            doc["images"].append(
                {
                    "id": image_id,
                    "file_name": f"{name}#t={i / FPS:.3f}",
                    "width": size,
                    "height": size,
                }
            )
            for bbox, category in boxes:
                if moved := _moved(bbox, dx * i, dy * i, size):
                    doc["annotations"].append(
                        {"id": len(doc["annotations"]) + 1, "image_id": image_id, "iscrowd": 0,
                         "category_id": category, "bbox": moved, "area": moved[2] * moved[3]}
                    )  # fmt: skip
    path = out / "annotations.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


def main(args: argparse.Namespace) -> int:
    count = args.per_class * len(CLASSES)
    if getattr(args, "video", False):
        path = make_detection_videos(args.out, count, args.size or 64, args.seed)
        print(
            f"wrote {count} videos, every 2nd frame's boxes labelled ({', '.join(CLASSES)}): {path}"
        )
        return 0
    path = make_detection_dataset(args.out, count, args.size or 64, args.seed)
    print(f"wrote {count} images with boxes of {len(CLASSES)} classes: {path}")
    return 0
