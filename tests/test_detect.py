"""Object detection (issue 17): boxes through resize and augmentation, ingest, train, serve."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xvhpc.data.transforms import augment, resize
from xvhpc.detect.boxes import MIN_VISIBLE, augment_boxes, resize_boxes
from xvhpc.spec.schema import AugmentSpec


def _mask(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    image = np.zeros((height, width, 1), np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    return image


def _extent(image: np.ndarray, level: int = 127) -> np.ndarray:
    """The box of the pixels above ``level`` (half-covered pixels count from 128 on)."""
    ys, xs = np.nonzero(image[:, :, 0] > level)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@st.composite
def image_and_box(draw):
    width, height = draw(st.integers(12, 90)), draw(st.integers(12, 90))
    x0, y0 = draw(st.integers(0, width - 4)), draw(st.integers(0, height - 4))
    x1, y1 = draw(st.integers(x0 + 3, width)), draw(st.integers(y0 + 3, height))
    return width, height, (x0, y0, x1, y1)


@settings(max_examples=300, deadline=None)
@given(
    image_and_box(),
    st.sampled_from(["squash", "letterbox", "center_crop", "tile"]),
    st.integers(16, 64),
    st.integers(1, 3),
)
def test_boxes_follow_every_resize_mode(case, mode, size, grid):
    """The box moves where the box's pixels go (to within the one pixel bilinear blurs)."""
    width, height, box = case
    images = resize(_mask(width, height, box), size, mode, grid)
    moved = resize_boxes(np.array([box]), width, height, size, mode, grid)
    assert len(moved) == len(images)
    for image, (boxes, keep) in zip(images, moved, strict=True):
        if not len(keep):
            continue
        assert keep.tolist() == [0]
        b = boxes[0]
        if min(b[2] - b[0], b[3] - b[1]) < 3:
            continue  # too thin to survive resampling as pixels above half
        assert np.abs(_extent(image) - b).max() <= 1.0, (b, _extent(image))


@settings(max_examples=300, deadline=None)
@given(image_and_box(), st.integers(0, 2**31), st.booleans())
def test_boxes_follow_flips_and_rotations_exactly(case, seed, pixel_ops):
    """Flips and 90° rotations move boxes exactly; blur, noise and colour ops leave them."""
    width, height, box = case
    spec = AugmentSpec(
        copies=1,
        hflip=True,
        vflip=True,
        rotate=[0, 90, 180, 270, -90, 450],
        blur=1.0 if pixel_ops else 0.0,
        noise=20.0 if pixel_ops else 0.0,
        brightness=0.1 if pixel_ops else 0.0,
    )
    image, ops = augment(_mask(width, height, box), spec, np.random.default_rng(seed))
    moved = augment_boxes(np.array([box]), width, height, ops)[0]
    assert image.shape[:2] == (moved_h := image.shape[0], image.shape[1])
    assert moved_h in (width, height)
    geometric = [op for op in ops if op in ("hflip", "vflip") or op.startswith("rotate")]
    plain, _ = augment(_mask(width, height, box), AugmentSpec(copies=1), np.random.default_rng(0))
    reference = plain
    for op in geometric:  # the same geometric ops alone, on the clean mask: exact pixels
        from PIL import Image

        pil = Image.fromarray(reference[:, :, 0])
        if op == "hflip":
            pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif op == "vflip":
            pil = pil.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        else:
            pil = pil.rotate(int(op.removeprefix("rotate")), expand=True)
        reference = np.asarray(pil)[:, :, None]
    np.testing.assert_array_equal(_extent(reference), moved)
    if not pixel_ops:
        np.testing.assert_array_equal(_extent(image), moved)


def test_min_visible_keeps_mostly_inside_boxes():
    """A crop keeps a box cut to at least MIN_VISIBLE of its area and drops the rest."""
    boxes = np.array([[0, 0, 10, 10], [0, 40, 10, 50]], np.float32)  # 100x50 → crop x 25..75
    (out, keep), = resize_boxes(boxes, 100, 50, 50, "center_crop")
    assert keep.tolist() == []
    (out, keep), = resize_boxes(np.array([[20, 0, 30, 10]]), 100, 50, 50, "center_crop")
    assert keep.tolist() == [0] and 0.5 >= MIN_VISIBLE
    np.testing.assert_allclose(out[0], [0, 0, 5, 10])
