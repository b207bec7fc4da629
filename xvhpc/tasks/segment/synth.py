"""``xvhpc demo-data --task segment``: X-ray-like images with known masks (PNG label maps).

Each image: a patient of its own (position, build, exposure: ``data/synth.py``'s field) with two
dark lung fields (class 1, ``lung``) and, in most images, a bright round device (class 2,
``device``: a pacemaker-like blob) somewhere on the chest; the rest is class 0, ``background``.
Writes ``images/``, ``masks/`` and ``labels.json``; deterministic for a seed.

Beside them, ``instances/`` holds the instance variant (Mask R-CNN, COCO): images of separate
and touching objects of two classes, ``device`` (bright discs, RLE) and ``marker`` (dimmer
squares, polygons), on the same X-ray-like field, with ``instances/instances.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ...data.synth import patient_field

CLASSES = ("background", "lung", "device")
OBJECTS = ("device", "marker")  # the instance variant's categories (ids 1, 2)


def chest(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One grayscale image (size×size uint8) and its label map (0, 1 lung, 2 device)."""
    s = size
    img = Image.new("L", (s, s), 20)
    mask = Image.new("L", (s, s), 0)
    d, m = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    dx, dy = rng.uniform(-0.06, 0.06, 2) * s
    w = rng.uniform(0.85, 1.1)
    d.ellipse([0.05 * s + dx, dy, 0.95 * s + dx, 1.1 * s + dy], fill=int(rng.uniform(110, 140)))
    half = 0.32 * s * w / 2
    for cx in (0.31, 0.69):
        top, bottom = (0.15 + rng.uniform(-0.04, 0.04)) * s, (0.85 + rng.uniform(-0.04, 0.04)) * s
        box = [cx * s + dx - half, top + dy, cx * s + dx + half, bottom + dy]
        d.ellipse(box, fill=int(rng.uniform(35, 55)))
        m.ellipse(box, fill=1)
    d.rectangle([0.47 * s + dx, 0.1 * s + dy, 0.53 * s + dx, 0.9 * s + dy], fill=150)  # spine
    if rng.random() < 0.8:
        r = rng.uniform(0.05, 0.09) * s
        x, y = rng.uniform(0.15 * s + r, 0.85 * s - r), rng.uniform(0.1 * s + r, 0.6 * s)
        d.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.uniform(225, 250)))
        m.ellipse([x - r, y - r, x + r, y + r], fill=2)
    pixels = np.asarray(img, np.float32) + patient_field(s, rng, 12.0)
    pixels += rng.normal(0, 6, (s, s)).astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8), np.asarray(mask, np.uint8)


def make_segmentation_dataset(
    out: str | Path, images: int = 40, size: int = 64, seed: int = 0
) -> Path:
    """``images/chestNNNNN.png``, ``masks/chestNNNNN.png`` and ``labels.json`` under ``out``."""
    out = Path(out)
    for sub in ("images", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for n in range(images):
        image, mask = chest(size, rng)
        Image.fromarray(image).save(out / "images" / f"chest{n:05d}.png")
        Image.fromarray(mask).save(out / "masks" / f"chest{n:05d}.png")
    (out / "labels.json").write_text(json.dumps({str(i): c for i, c in enumerate(CLASSES)}))
    return out


def _place(size: int, rng: np.random.Generator, placed: list) -> tuple[int, float, float, float]:
    """(category, x, y, radius) of one more object: beside the last one, touching it, one time
    in three (two objects of one class that only a model of instances tells apart), else free."""
    cat = int(rng.integers(1, 3))
    r = float(rng.uniform(0.08, 0.13) * size)
    if placed and rng.random() < 0.35:
        cat, px, py, pr = placed[-1]
        x, y = px + pr + r, py
        if x + r < size - 1:
            return cat, x, y, r
    return cat, float(rng.uniform(r + 1, size - r - 1)), float(rng.uniform(r + 1, size - r - 1)), r


def objects(size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One gray image and its objects (category, boolean mask), 1 to 4 each, no overlaps."""
    pixels = np.full((size, size), 60, np.float32) + patient_field(size, rng, 12.0)
    taken = np.zeros((size, size), bool)
    placed: list = []
    found = []
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    for _ in range(int(rng.integers(1, 5))):
        cat, x, y, r = _place(size, rng, placed)
        if cat == 1:
            mask = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
        else:
            mask = (np.abs(xx - x) <= r) & (np.abs(yy - y) <= r)
        if (mask & taken).any() or not mask.any():
            continue
        taken |= mask
        placed.append((cat, x, y, r))
        pixels[mask] = rng.uniform(220, 245) if cat == 1 else rng.uniform(140, 165)
        found.append((cat, mask))
    pixels += rng.normal(0, 6, (size, size)).astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8), found


def _segmentation(cat: int, mask: np.ndarray) -> object:
    """Discs as compressed RLE, squares as their outline polygon (both COCO forms)."""
    if cat == 2:
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]
    from pycocotools import mask as coco

    code = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in code["size"]], "counts": code["counts"].decode()}


def make_instance_dataset(out: str | Path, images: int = 40, size: int = 64, seed: int = 0) -> Path:
    """``images/objNNNNN.png`` and ``instances.json`` (COCO, a ``group`` per image) under
    ``out``; deterministic for a seed."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    doc: dict = {"images": [], "annotations": [],
                 "categories": [{"id": i + 1, "name": n} for i, n in enumerate(OBJECTS)]}  # fmt: skip
    for n in range(images):
        image, found = objects(size, rng)
        name = f"images/obj{n:05d}.png"
        Image.fromarray(image).save(out / name)
        doc["images"].append({"id": n, "file_name": name, "width": size, "height": size,
                              "group": f"p{n}"})  # fmt: skip
        for cat, mask in found:
            ys, xs = np.nonzero(mask)
            doc["annotations"].append({
                "id": len(doc["annotations"]) + 1, "image_id": n, "category_id": cat,
                "segmentation": _segmentation(cat, mask), "iscrowd": 0, "area": int(mask.sum()),
                "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1],
            })  # fmt: skip
    path = out / "instances.json"
    path.write_text(json.dumps(doc))
    return path


FPS, FRAMES, EVERY = 8, 16, 2  # demo videos: 2 s at 8 fps, every 2nd frame labelled


def make_segmentation_videos(
    out: str | Path, videos: int = 24, size: int = 64, seed: int = 0
) -> Path:
    """``images/clipNNN.mp4`` (one chest panning 1 pixel a frame), ``masks/clipNNN.mp4/
    t=<seconds>.png`` for every 2nd frame, and ``labels.json`` under ``out``."""
    from ...data.synth import encode_video, pan

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for n in range(videos):
        image, mask = chest(size, rng)
        dx, dy = (int(v) for v in rng.choice([-1, 1], 2))
        name = f"clip{n:03d}.mp4"
        encode_video(
            out / "images" / name, (pan(image, dx * i, dy * i, 20) for i in range(FRAMES)), FPS
        )
        (out / "masks" / name).mkdir(parents=True, exist_ok=True)
        for i in range(0, FRAMES, EVERY):
            Image.fromarray(pan(mask, dx * i, dy * i)).save(
                out / "masks" / name / f"t={i / FPS:.3f}.png"
            )
    (out / "labels.json").write_text(json.dumps({str(i): c for i, c in enumerate(CLASSES)}))
    return out


def main(args: argparse.Namespace) -> int:
    images = args.per_class
    if getattr(args, "video", False):
        path = make_segmentation_videos(args.out, images, args.size or 64, args.seed)
        print(
            f"wrote {images} videos, every 2nd frame's mask labelled ({', '.join(CLASSES)}): {path}"
        )
        return 0
    path = make_segmentation_dataset(args.out, images, args.size or 64, args.seed)
    coco = make_instance_dataset(Path(args.out) / "instances", images, args.size or 64, args.seed)
    print(
        f"wrote {images} images with masks of {len(CLASSES)} classes ({', '.join(CLASSES)}): {path}"
        f"\nand {images} images of objects ({', '.join(OBJECTS)}) for Mask R-CNN: {coco}"
    )
    return 0
