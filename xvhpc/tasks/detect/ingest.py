"""Detection ingest: one file → its resized image(s) with boxes, and augmented copies.

Builds on the task-neutral half (``data/records.py``: decoding, augmentation seeds, records)
and moves each image's boxes with ``detect/boxes.py``; shards get a flat ``boxes`` dataset
(x0, y0, x1, y1), ``box_labels``, and per image ``box_start``/``box_count``.
"""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np

from ...data.decode import decode, for_boxes
from ...data.manifest import BOX_SKIPPED
from ...data.records import (
    SampleJob,
    augmented_copies,
    decoded,
    frame_time,
    original_record,
    source_name,
)
from ...data.shards import Record, ShardWriter
from ...data.transforms import resize
from .boxes import augment_boxes, resize_boxes


def _frames(path, opts, name: str = "") -> list[np.ndarray]:
    return decode(path, for_boxes(opts), name=name)


def _with_boxes(record: Record, boxes: np.ndarray, labels: np.ndarray) -> Record:
    table = np.column_stack([boxes, labels]).astype(np.float32).reshape(-1, 5)
    return dataclasses.replace(record, target=table)


def process_detection(job: SampleJob) -> tuple[list[Record], str | None]:
    """Decode, resize and augment one file with its boxes; (records, None) or ([], reason)."""
    frames, reason = decoded(job, read=_frames)
    if reason is not None:
        return [], reason
    table = np.array(job.sample.target or [], np.float64).reshape(-1, 5)
    opts, records, lost = job.opts, [], 0
    visible = job.data.min_box_visible
    for f, frame in enumerate(frames):
        height, width = frame.shape[:2]
        images = resize(frame, opts.size, opts.resize, opts.tile_grid)
        moved = resize_boxes(
            table[:, :4], width, height, opts.size, opts.resize, opts.tile_grid, visible
        )
        kept = set().union(*(set(keep.tolist()) for _, keep in moved)) if moved else set()
        lost += len(table) - len(kept)
        for t, (image, (boxes, keep)) in enumerate(zip(images, moved, strict=True)):
            source = source_name(
                job.sample.rel, f, len(frames), t, len(images), frame_time(frames, f)
            )
            labels = table[keep, 4]
            original = original_record(job, image, source)
            records.append(_with_boxes(original, boxes, labels))
            for copy in augmented_copies(job, image, source):
                ops = json.loads(copy.ops)["ops"]
                records.append(
                    _with_boxes(
                        copy, augment_boxes(boxes, image.shape[1], image.shape[0], ops), labels
                    )
                )
    if lost:  # the image is kept; the boxes no output image holds are said (issue 23 finding 5)
        return records, (
            f"{BOX_SKIPPED} {lost} of {len(table)} box(es) lie in no {opts.resize} output image "
            f"by {visible:.0%} or more (data.min_box_visible; they straddle the tiles): not in "
            "the shards"
        )
    return records, None


class DetectionShardWriter(ShardWriter):
    """A classification shard plus each image's boxes (variable length: a flat table + offsets)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        create = self._file.create_dataset
        self.boxes = create("boxes", (0, 4), maxshape=(None, 4), dtype="float32", chunks=(4096, 4))
        self.box_labels = create(
            "box_labels", (0,), maxshape=(None,), dtype="int16", chunks=(4096,)
        )
        self.box_start = create("box_start", (0,), maxshape=(None,), dtype="int64", chunks=(4096,))
        self.box_count = create("box_count", (0,), maxshape=(None,), dtype="int32", chunks=(4096,))

    def _write_pending(self) -> None:
        tables = [
            r.target if r.target is not None else np.zeros((0, 5), np.float32)
            for r in self._pending
        ]
        start, n = self.count, len(tables)
        super()._write_pending()
        if not n:
            return
        counts = np.array([len(t) for t in tables], np.int64)
        first = len(self.boxes)
        _append(self.box_start, first + np.concatenate([[0], np.cumsum(counts)[:-1]]), start)
        _append(self.box_count, counts, start)
        flat = np.concatenate(tables) if counts.sum() else np.zeros((0, 5), np.float32)
        _append(self.boxes, flat[:, :4], first)
        _append(self.box_labels, flat[:, 4].astype(np.int16), first)


def _append(ds: h5py.Dataset, values: np.ndarray, at: int) -> None:
    ds.resize(at + len(values), axis=0)
    if len(values):
        ds[at : at + len(values)] = values
