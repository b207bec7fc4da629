"""Segmentation ingest: one file → its resized image(s) with masks, and augmented copies.

The mask goes through the image's resize (every mode, tiles included) and the geometric ops of
each augmented copy, nearest-neighbour (``data/transforms.py``: ``resize(nearest=True)``,
``replay_geometry``), so it never holds a value its source did not; pixels that come from no
source pixel (letterbox padding, the corners of a rotation) are 255, ignored. Shards get a
``masks`` dataset (N, size, size) of uint8, gzip-compressed, beside ``images``.

A COCO image's mask is its instance-id map (``instances.py``: 0 none, 1..N its objects, 255
ignore) and the shard also gets ``instance_classes`` (N, 256) uint8, each record's class of
every id; the dataset gives the semantic label map ``table[ids]`` (what a semantic model
trains on, identical to painting the classes) or the objects (Mask R-CNN). The ids ride the
same nearest-neighbour resize and ``replay_geometry`` as any label map.
"""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np

from ...data.decode import decode, for_boxes
from ...data.records import SampleJob, augmented_copies, decoded, original_record, source_name
from ...data.shards import Record, ShardWriter
from ...data.transforms import replay_geometry, resize
from .catalog import MaskError, read_mask
from .info import IGNORE
from .instances import class_map, coco_instances


def _frames(path, opts, name: str = "") -> list[np.ndarray]:
    return decode(path, for_boxes(opts), name=name)  # stored pixels: the frame masks are drawn on


def coco_mask(height: int, width: int, drawn: tuple) -> np.ndarray:
    """The label map of COCO annotations (class, segmentation JSON, crowd): painted in order,
    crowd regions last as 255 (ignore), 0 where nothing is drawn."""
    ids, table, _ = coco_instances(height, width, drawn)
    return class_map(ids, table)


def sample_mask(job: SampleJob) -> np.ndarray:
    """The sample's label map (HxW uint8) as its catalog entry describes it; ``MaskError``."""
    mask, table, _ = sample_maps(job)
    return mask if table is None else class_map(mask, table)


def sample_maps(job: SampleJob) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(map, class table, note): a folder's label map with no table, or a COCO image's
    instance-id map with its class table (``instances.py``); ``MaskError``."""
    target = job.sample.target
    if isinstance(target, str):
        return read_mask(target), None, ""
    height, width, drawn = target
    try:
        return coco_instances(height, width, drawn)
    except ValueError as exc:
        raise MaskError(str(exc)) from None


@dataclasses.dataclass
class InstanceRecord(Record):
    """A record of a COCO image: ``target`` is its instance-id map, ``table`` the class of
    each id (256 uint8), which the shard writer stores as ``instance_classes``."""

    table: np.ndarray | None = None


def _with_mask(record: Record, mask: np.ndarray, table: np.ndarray | None) -> Record:
    target = np.ascontiguousarray(mask[:, :, 0])
    if table is None:
        return dataclasses.replace(record, target=target)
    return InstanceRecord(**{**vars(record), "target": target}, table=table)


def process_segmentation(job: SampleJob) -> tuple[list[Record], str | None]:
    """Decode, resize and augment one file with its mask; (records, None) or ([], reason)."""
    frames, reason = decoded(job, read=_frames)
    if reason is not None:
        return [], reason
    if len(frames) != 1:
        return [], f"{len(frames)} frames: a mask covers one image (data.dicom_frames: first)"
    try:
        mask, table, note = sample_maps(job)
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
        records.append(_with_mask(original_record(job, image, source), small, table))
        for copy in augmented_copies(job, image, source):
            ops = json.loads(copy.ops)["ops"]
            records.append(_with_mask(copy, replay_geometry(small, ops, IGNORE), table))
    return records, note or None


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

        self.tables: h5py.Dataset | None = None  # instance_classes: made by the first COCO record

    def _write_pending(self) -> None:
        size = self.images.shape[1]
        masks = [
            r.target if r.target is not None else np.full((size, size), IGNORE, np.uint8)
            for r in self._pending
        ]
        tables = [getattr(r, "table", None) for r in self._pending]
        start = self.count
        super()._write_pending()
        if masks:
            self.masks.resize(start + len(masks), axis=0)
            self.masks[start : start + len(masks)] = np.stack(masks)
        if any(t is not None for t in tables):
            self._write_tables(start, tables)

    def _write_tables(self, start: int, tables: list[np.ndarray | None]) -> None:
        """Each record's class table (``instance_classes``); a record without one (none in a
        COCO run: a shard holds one source's records) gets the identity, ids as classes."""
        if self.tables is None:
            if start:
                raise ValueError("instance tables after records without: one source per run")
            self.tables = self._file.create_dataset(
                "instance_classes", (0, 256), maxshape=(None, 256), dtype="uint8",
                chunks=(256, 256), compression="gzip", track_times=False,
            )  # fmt: skip
        identity = np.arange(256, dtype=np.uint8)
        self.tables.resize(start + len(tables), axis=0)
        self.tables[start : start + len(tables)] = np.stack(
            [identity if t is None else t for t in tables]
        )
