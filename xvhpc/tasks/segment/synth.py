"""``xvhpc demo-data --task segment``: X-ray-like images with known masks (PNG label maps).

Each image: a patient of its own (position, build, exposure: ``data/synth.py``'s field) with two
dark lung fields (class 1, ``lung``) and, in most images, a bright round device (class 2,
``device``: a pacemaker-like blob) somewhere on the chest; the rest is class 0, ``background``.
Writes ``images/``, ``masks/`` and ``labels.json``; deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ...data.synth import patient_field

CLASSES = ("background", "lung", "device")


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


def main(args: argparse.Namespace) -> int:
    images = args.per_class
    path = make_segmentation_dataset(args.out, images, args.size or 64, args.seed)
    print(
        f"wrote {images} images with masks of {len(CLASSES)} classes ({', '.join(CLASSES)}): {path}"
    )
    return 0
