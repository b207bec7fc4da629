"""Segmentation ingest: one file → its resized image(s) with masks, and augmented copies.

The mask goes through the image's resize (every mode, tiles included) and the geometric ops of
each augmented copy, nearest-neighbour (``data/transforms.py``: ``resize(nearest=True)``,
``replay_geometry``), so it never holds a value its source did not; pixels that come from no
source pixel (letterbox padding, the corners of a rotation) are 255, ignored. Shards get a
``masks`` dataset (N, size, size) of uint8, gzip-compressed, beside ``images``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np

from ...data.decode import decode, for_boxes
from ...data.records import SampleJob, augmented_copies, decoded, original_record, source_name
from ...data.shards import Record, ShardWriter
from ...data.transforms import replay_geometry, resize
from .catalog import MaskError, read_mask
from .info import IGNORE


def _frames(path, opts, name: str = "") -> list[np.ndarray]:
    return decode(path, for_boxes(opts), name=name)  # stored pixels: the frame masks are drawn on


def coco_mask(height: int, width: int, drawn: tuple) -> np.ndarray:
    """The label map of COCO annotations (class, segmentation JSON, crowd): painted in order,
    crowd regions last as 255 (ignore), 0 where nothing is drawn."""
    from pycocotools import mask as coco

    out = np.zeros((height, width), np.uint8)
    for crowd in (False, True):
        for cls, text, is_crowd in drawn:
            if is_crowd != crowd:
                continue
            seg = json.loads(text)
            if isinstance(seg, list):
                rle = coco.merge(coco.frPyObjects(seg, height, width))
            elif isinstance(seg["counts"], list):
                rle = coco.frPyObjects(seg, *seg["size"])
            else:
                rle = {"size": seg["size"], "counts": seg["counts"].encode()}
            if list(rle["size"]) != [height, width]:
                raise MaskError(f"RLE size {rle['size']} is not the image's {height}x{width}")
            with warnings.catch_warnings():  # pycocotools' Cython __array__ under NumPy 2
                warnings.simplefilter("ignore", DeprecationWarning)
                drawn_pixels = coco.decode(rle).astype(bool)
            out[drawn_pixels] = IGNORE if crowd else cls
    return out


def sample_mask(job: SampleJob) -> np.ndarray:
    """The sample's label map (HxW uint8) as its catalog entry describes it; ``MaskError``."""
    target = job.sample.target
    if isinstance(target, str):
        return read_mask(target)
    height, width, drawn = target
    return coco_mask(height, width, drawn)


def _with_mask(record: Record, mask: np.ndarray) -> Record:
    return dataclasses.replace(record, target=np.ascontiguousarray(mask[:, :, 0]))


def process_segmentation(job: SampleJob) -> tuple[list[Record], str | None]:
    """Decode, resize and augment one file with its mask; (records, None) or ([], reason)."""
    frames, reason = decoded(job, read=_frames)
    if reason is not None:
        return [], reason
    if len(frames) != 1:
        return [], f"{len(frames)} frames: a mask covers one image (data.dicom_frames: first)"
    try:
        mask = sample_mask(job)
    except MaskError as exc:
        return [], str(exc)
    except Exception as exc:  # pycocotools on a malformed polygon or RLE
        return [], f"mask cannot be drawn: {type(exc).__name__}: {exc}"
    frame = frames[0]
    if mask.shape != frame.shape[:2]:
        return [], (
            f"mask is {mask.shape[1]}x{mask.shape[0]}, the decoded image "
            f"{frame.shape[1]}x{frame.shape[0]}"
        )
    opts, records = job.opts, []
    images = resize(frame, opts.size, opts.resize, opts.tile_grid)
    masks = resize(
        mask[:, :, None], opts.size, opts.resize, opts.tile_grid, nearest=True, fill=IGNORE
    )
    for t, (image, small) in enumerate(zip(images, masks, strict=True)):
        source = source_name(job.sample.rel, 0, 1, t, len(images))
        records.append(_with_mask(original_record(job, image, source), small))
        for copy in augmented_copies(job, image, source):
            ops = json.loads(copy.ops)["ops"]
            records.append(_with_mask(copy, replay_geometry(small, ops, IGNORE)))
    return records, None


class SegmentationShardWriter(ShardWriter):
    """A classification shard plus each image's mask (``masks``: N×size×size uint8, gzip)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        size = self.images.shape[1]
        self.masks = self._file.create_dataset(
            "masks",
            (0, size, size),
            maxshape=(None, size, size),
            dtype="uint8",
            chunks=(1, size, size),
            compression="gzip",
            track_times=False,
        )

    def _write_pending(self) -> None:
        size = self.images.shape[1]
        masks = [
            r.target if r.target is not None else np.full((size, size), IGNORE, np.uint8)
            for r in self._pending
        ]
        start = self.count
        super()._write_pending()
        if masks:
            self.masks.resize(start + len(masks), axis=0)
            self.masks[start : start + len(masks)] = np.stack(masks)
