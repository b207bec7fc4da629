"""Segmentation samples from shards: the image (as ``ShardDataset`` gives it) and its mask, or,
for Mask R-CNN, its objects.

A shard of COCO images stores instance-id maps in ``masks`` and each record's class table in
``instance_classes`` (``ingest.py``); ``masks()`` maps them through the table, so a semantic
model sees the same label maps whatever the source. ``use_instances()`` (the instance loss
and validation call it) switches the samples to ``(image, {boxes, labels, masks})``."""

from __future__ import annotations

import numpy as np
import torch

from ...data.dataset import Index, ShardDataset
from .instances import instance_targets

Sample = tuple[torch.Tensor, torch.Tensor]
Target = dict[str, torch.Tensor]

NO_INSTANCES = (
    "instance segmentation needs COCO shards (an annotation per object): this run's shards "
    "hold label maps from a folder of masks; ingest a COCO .json (data.format: coco)"
)


class SegmentationDataset(ShardDataset):
    """``(uint8 HxWxC image, int64 HxW mask)``: mask values are class indices, 255 ignored;
    after ``use_instances()``: ``(image, {"boxes", "labels", "masks"})`` per object.

    Masks are read from each shard's ``masks`` dataset (gzip) as the images are, lazily per
    worker; ``cache_in_memory`` keeps both in memory."""

    def __init__(self, index: Index, cache_in_memory: bool = False, chunk_cache_mb: int = 64):
        super().__init__(index, cache_in_memory, chunk_cache_mb)
        self.instances = False
        self._mask_memory: tuple[np.ndarray, np.ndarray | None] | None = None
        if cache_in_memory and len(index):
            self._mask_memory = self.id_maps(np.arange(len(index)))
            self._close()

    def id_maps(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The stored maps of samples ``idx`` (uint8 N×H×W) and their class tables (N×256),
        None where the shards have none (label maps from folders)."""
        if self._mask_memory is not None:
            memory, table_memory = self._mask_memory
            return memory[idx], None if table_memory is None else table_memory[idx]
        shards, rows = self.index.shard[idx], self.index.row[idx]
        out: list[np.ndarray] = []
        tables: list[np.ndarray] = []
        for shard, row in zip(shards.tolist(), rows.tolist(), strict=True):
            h5 = self._file(int(shard))
            out.append(h5["masks"][int(row)])
            if "instance_classes" in h5:
                tables.append(h5["instance_classes"][int(row)])
        if len(tables) not in (0, len(out)):
            raise ValueError("shards of one run mix label maps and instance maps")
        maps = np.stack(out) if out else np.zeros((0, 0, 0), np.uint8)
        return maps, (np.stack(tables) if tables else None)

    def masks(self, idx: np.ndarray) -> np.ndarray:
        """The label maps of samples ``idx`` (uint8, N×H×W), in the order asked."""
        maps, tables = self.id_maps(idx)
        if tables is None:
            return maps
        return np.take_along_axis(tables, maps.reshape(len(maps), -1), 1).reshape(maps.shape)

    def use_instances(self) -> SegmentationDataset:
        """Give objects from now on (Mask R-CNN); ``ValueError`` for shards of label maps."""
        if len(self) and self.id_maps(np.array([0]))[1] is None:
            raise ValueError(NO_INSTANCES)
        self.instances = True
        return self

    def mask(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.masks(np.array([i]))[0].astype(np.int64))

    def target(self, i: int) -> Target:
        """Sample ``i``'s objects: boxes (float32 x0, y0, x1, y1), labels (int64 classes ≥ 1,
        torchvision's: class 0 is the background) and masks (uint8 n×H×W)."""
        maps, tables = self.id_maps(np.array([i]))
        assert tables is not None, NO_INSTANCES
        found = instance_targets(maps[0], tables[0])
        return {k: torch.from_numpy(v) for k, v in found.items()}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor | Target]:  # type: ignore[override]
        image = self._memory[i] if self._memory is not None else self._read(i)
        label = self.target(i) if self.instances else self.mask(i)
        return torch.from_numpy(np.ascontiguousarray(image)), label

    def __getitems__(self, indices: list[int]) -> list:
        if self.instances:
            return [self[i] for i in indices]
        idx = np.asarray(indices, dtype=np.int64)
        images = self._memory[idx] if self._memory is not None else self._read_many(idx)
        masks = torch.from_numpy(self.masks(idx).astype(np.int64))
        return list(zip(torch.from_numpy(np.ascontiguousarray(images)), masks, strict=True))

    def collate(self, batch: list) -> tuple[torch.Tensor, torch.Tensor | list[Target]]:
        """Images (N×H×W×C uint8) stacked with masks (N×H×W int64), or with the list of each
        image's objects (their number varies)."""
        images = torch.stack([b[0] for b in batch])
        if self.instances:
            return images, [b[1] for b in batch]
        return images, torch.stack([b[1] for b in batch])
