"""Boxes through the geometry of ``data/transforms.py``: resize modes and offline augmentation.

Pure numpy. A box is ``(x0, y0, x1, y1)`` in pixels of the image it belongs to, covering
``[x0, x1) × [y0, y1)``; the functions here move boxes exactly as the image pixels move.
"""

from __future__ import annotations

import numpy as np

from ...data.transforms import resize_windows

MIN_VISIBLE = 0.3  # a box cut by a crop or tile is kept when this fraction of it remains


def empty() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


def resize_boxes(
    boxes: np.ndarray,
    width: int,
    height: int,
    size: int,
    mode: str,
    tile_grid: int = 2,
    min_visible: float = MIN_VISIBLE,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per output image of ``resize``: its boxes and which input boxes they are (a crop or
    tile keeps a box when at least ``min_visible`` of it is inside, clipped to the edge)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = []
    for sx0, sy0, sx1, sy1, ox0, oy0, ox1, oy1 in resize_windows(
        width, height, size, mode, tile_grid
    ):
        clipped = np.clip(boxes, [sx0, sy0, sx0, sy0], [sx1, sy1, sx1, sy1])
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        keep = np.nonzero((inside > 0) & (inside >= min_visible * area))[0]
        fx, fy = (ox1 - ox0) / (sx1 - sx0), (oy1 - oy0) / (sy1 - sy0)
        moved = (clipped[keep] - [sx0, sy0, sx0, sy0]) * [fx, fy, fx, fy] + [ox0, oy0, ox0, oy0]
        out.append((moved.astype(np.float32), keep))
    return out


def unresize_boxes(
    boxes: np.ndarray, width: int, height: int, size: int, mode: str, tile_grid: int, tile: int
) -> np.ndarray:
    """Boxes found on output image ``tile`` of ``resize`` → pixels of the original image."""
    sx0, sy0, sx1, sy1, ox0, oy0, ox1, oy1 = resize_windows(width, height, size, mode, tile_grid)[
        tile
    ]
    fx, fy = (ox1 - ox0) / (sx1 - sx0), (oy1 - oy0) / (sy1 - sy0)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    back = (b - [ox0, oy0, ox0, oy0]) / [fx, fy, fx, fy] + [sx0, sy0, sx0, sy0]
    return np.clip(back, [sx0, sy0, sx0, sy0], [sx1, sy1, sx1, sy1]).astype(np.float32)


def visible(boxes: np.ndarray) -> np.ndarray:
    """Which boxes keep an area (one found in the letterbox padding clips to a line)."""
    b = np.asarray(boxes).reshape(-1, 4)
    return (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])


def flip_boxes(boxes: np.ndarray, width: int, height: int, op: str) -> np.ndarray:
    """``hflip`` or ``vflip`` of an image ``width`` × ``height``."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    x0, y0, x1, y1 = b.T
    if op == "hflip":
        return np.stack([width - x1, y0, width - x0, y1], 1)
    return np.stack([x0, height - y1, x1, height - y0], 1)


def rotate_boxes(boxes: np.ndarray, width: int, height: int, angle: int) -> np.ndarray:
    """Counter-clockwise rotation by a multiple of 90° (PIL's ROTATE_90/180/270)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    x0, y0, x1, y1 = b.T
    turn = angle % 360
    if turn == 90:
        return np.stack([y0, width - x1, y1, width - x0], 1)
    if turn == 180:
        return np.stack([width - x1, height - y1, width - x0, height - y0], 1)
    if turn == 270:
        return np.stack([height - y1, x0, height - y0, x1], 1)
    if turn == 0:
        return b.copy()
    raise ValueError(f"rotation by {angle}° does not keep boxes exact (multiples of 90 only)")


def augment_boxes(boxes: np.ndarray, width: int, height: int, ops: list[str]) -> np.ndarray:
    """Boxes after the ops ``transforms.augment`` reported, in order (pixel ops leave them)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    for op in ops:
        if op in ("hflip", "vflip"):
            b = flip_boxes(b, width, height, op)
        elif op.startswith("rotate"):
            angle = int(op.removeprefix("rotate"))
            b = rotate_boxes(b, width, height, angle)
            if angle % 180:
                width, height = height, width
    return b
