"""Resize to the model input and offline augmentation, on HxWxC uint8 arrays."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from ..spec.schema import AugmentSpec
from .decode import BadImage, DecodeOptions, decode
from .video import Frames


def _pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def _array(image: Image.Image, channels: int) -> np.ndarray:
    out = np.asarray(image)
    if out.ndim == 2:
        out = out[:, :, None]
    return np.ascontiguousarray(out[:, :, :channels])


def resize(
    array: np.ndarray, size: int, mode: str, tile_grid: int = 2, *, nearest: bool = False,
    fill: int = 0,
) -> list[np.ndarray]:  # fmt: skip
    """squash | letterbox | center_crop | tile → size×size image(s).

    ``nearest``: a label map (segmentation masks) resized pixel for pixel alongside its image,
    nearest-neighbour and without the reducing gap (which averages), so no new values appear;
    ``fill``: the value of letterbox padding (0: black; a mask's ignore index)."""
    channels = array.shape[2]
    image = _pil(array)
    width, height = image.size
    sample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    gap = None if nearest else 3.0

    def scaled(im: Image.Image, to: tuple[int, int], reducing_gap: float | None = gap):
        return im.resize(to, sample, reducing_gap=reducing_gap)

    if mode == "squash":
        return [_array(scaled(image, (size, size)), channels)]
    if mode == "letterbox":
        scale = size / max(width, height)
        new = (max(1, round(width * scale)), max(1, round(height * scale)))
        canvas = Image.new(image.mode, (size, size), fill)
        canvas.paste(scaled(image, new), ((size - new[0]) // 2, (size - new[1]) // 2))
        return [_array(canvas, channels)]
    if mode == "center_crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        crop = image.crop((left, top, left + side, top + side))
        return [_array(scaled(crop, (size, size)), channels)]
    if mode == "tile":
        if min(array.shape[:2]) < tile_grid:
            raise BadImage(
                f"{array.shape[1]}x{array.shape[0]} px is smaller than the {tile_grid}x{tile_grid} "
                "tile grid"
            )
        out = []
        for row in range(tile_grid):
            for col in range(tile_grid):
                box = (
                    col * width // tile_grid,
                    row * height // tile_grid,
                    (col + 1) * width // tile_grid,
                    (row + 1) * height // tile_grid,
                )
                out.append(_array(scaled(image.crop(box), (size, size), None), channels))
        return out
    raise ValueError(f"unknown resize mode {mode!r} (valid: squash, letterbox, center_crop, tile)")


def prepare(
    source: str | os.PathLike[str] | bytes, opts: DecodeOptions, name: str = ""
) -> list[list[np.ndarray]]:
    """Decode and resize one file → per frame, its model-sized image(s) (tiles).

    A gray source stays one channel even when ``opts.channels`` is 3 (a third of the resize,
    hash and augmentation work); the shard writer and ``to_model_input`` replicate it.
    """
    frames = decode(source, dataclasses.replace(opts, expand_gray=False), name=name)
    resized = [resize(frame, opts.size, opts.resize, opts.tile_grid) for frame in frames]
    if isinstance(frames, Frames):  # a video's frames keep their times
        return Frames(resized, frames.times, frames.size)
    return resized


def augment(
    array: np.ndarray, spec: AugmentSpec, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """One augmented copy and the ops applied (random choices drawn from ``rng``)."""
    channels = array.shape[2]
    image = _pil(array)
    ops: list[str] = []
    if spec.hflip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        ops.append("hflip")
    if spec.vflip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        ops.append("vflip")
    if spec.rotate:
        angle = int(rng.choice(spec.rotate))
        exact = {
            90: Image.Transpose.ROTATE_90,
            180: Image.Transpose.ROTATE_180,
            270: Image.Transpose.ROTATE_270,
        }
        if angle % 360 in exact:
            image = image.transpose(exact[angle % 360])
        elif angle % 360:
            image = image.rotate(angle, resample=Image.Resampling.BILINEAR)
        ops.append(f"rotate{angle}")
    if spec.blur > 0 and rng.random() < 0.5:
        radius = float(rng.uniform(0.1, spec.blur))
        image = image.filter(ImageFilter.GaussianBlur(radius))
        ops.append(f"blur{radius:.2f}")
    if spec.sharpen and rng.random() < 0.5:
        image = image.filter(ImageFilter.SHARPEN)
        ops.append("sharpen")
    if spec.brightness > 0:
        factor = float(rng.uniform(1 - spec.brightness, 1 + spec.brightness))
        image = ImageEnhance.Brightness(image).enhance(factor)
        ops.append(f"brightness{factor:.2f}")
    if spec.contrast > 0:
        factor = float(rng.uniform(1 - spec.contrast, 1 + spec.contrast))
        image = ImageEnhance.Contrast(image).enhance(factor)
        ops.append(f"contrast{factor:.2f}")
    out = _array(image, channels)
    if spec.noise > 0:
        noisy = out.astype(np.float32) + rng.normal(0, spec.noise, out.shape).astype(np.float32)
        out = np.clip(noisy, 0, 255).astype(np.uint8)
        ops.append(f"noise{spec.noise:g}")
    return out, ops


def replay_geometry(array: np.ndarray, ops: list[str], fill: int = 0) -> np.ndarray:
    """The geometric ops of an ``augment`` copy (flips, rotations) applied to an array aligned
    with its image (a segmentation mask): nearest-neighbour, so no new values; pixels rotated
    in from outside take ``fill``. Photometric ops (blur, noise, ...) leave it as it is."""
    channels = array.shape[2]
    image = _pil(array)
    exact = {
        90: Image.Transpose.ROTATE_90,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_270,
    }
    for op in ops:
        if op == "hflip":
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif op == "vflip":
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        elif op.startswith("rotate"):
            angle = int(op.removeprefix("rotate"))
            if angle % 360 in exact:
                image = image.transpose(exact[angle % 360])
            elif angle % 360:
                image = image.rotate(angle, resample=Image.Resampling.NEAREST, fillcolor=fill)
    return _array(image, channels)


def resize_windows(width: int, height: int, size: int, mode: str, tile_grid: int) -> list[tuple]:
    """Per output image: (source window x0, y0, x1, y1, output x0, y0, x1, y1), mirroring
    ``transforms.resize``: the source window is scaled onto the output rectangle."""
    if mode == "squash":
        return [(0, 0, width, height, 0, 0, size, size)]
    if mode == "letterbox":
        scale = size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        left, top = (size - new_w) // 2, (size - new_h) // 2
        return [(0, 0, width, height, left, top, left + new_w, top + new_h)]
    if mode == "center_crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return [(left, top, left + side, top + side, 0, 0, size, size)]
    if mode == "tile":
        return [
            (
                col * width // tile_grid,
                row * height // tile_grid,
                (col + 1) * width // tile_grid,
                (row + 1) * height // tile_grid,
                0,
                0,
                size,
                size,
            )
            for row in range(tile_grid)
            for col in range(tile_grid)
        ]
    raise ValueError(f"unknown resize mode {mode!r} (valid: squash, letterbox, center_crop, tile)")
