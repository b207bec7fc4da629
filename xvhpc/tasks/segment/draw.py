"""Masks drawn over their images (numpy only): the report's samples and serve's overlay."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .metrics import IGNORE

# class colours of the overlays (class 0, usually background, is left undrawn)
PALETTE = np.array(
    [(0, 0, 0), (0, 200, 0), (255, 200, 0), (0, 140, 255), (255, 60, 60), (200, 0, 255),
     (0, 220, 220), (255, 128, 0)], dtype=np.float32,
)  # fmt: skip


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image (gray or RGB) with each non-zero class of ``mask`` tinted in its colour
    (255, ignored: left as it is)."""
    base = image[:, :, :3] if image.shape[2] == 3 else np.repeat(image[:, :, :1], 3, axis=2)
    out = base.astype(np.float32)
    drawn = (mask > 0) & (mask != IGNORE)
    colour = PALETTE[(mask.astype(np.int64) - 1) % (len(PALETTE) - 1) + 1]
    out[drawn] = (1 - alpha) * out[drawn] + alpha * colour[drawn]
    return out.clip(0, 255).astype(np.uint8)


def overlay_png(image: np.ndarray, mask: np.ndarray, longest: int = 1024) -> bytes:
    """``overlay`` as a PNG, shrunk to at most ``longest`` pixels a side (serve's ``heatmap``
    field has that limit for every task)."""
    pil = Image.fromarray(overlay(image, mask))
    pil.thumbnail((longest, longest), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()
