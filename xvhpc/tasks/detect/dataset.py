"""Detection samples from shards: the image and its boxes (model labels: class + 1)."""

from __future__ import annotations

import h5py
import numpy as np
import torch

from ...data.dataset import Index, ShardDataset
from ...models.detection import detector_input

__all__ = ["DetectionDataset", "Target", "detector_input"]

Target = dict[str, torch.Tensor]


class DetectionDataset(ShardDataset):
    """``(uint8 HxWxC image, {"boxes", "labels"})``; the box tables are read once, up front."""

    def __init__(self, index: Index, cache_in_memory: bool = False, chunk_cache_mb: int = 64):
        super().__init__(index, cache_in_memory, chunk_cache_mb)
        self._tables = []
        for path in index.files:
            with h5py.File(path, "r") as h5:
                self._tables.append(
                    tuple(h5[k][:] for k in ("box_start", "box_count", "boxes", "box_labels"))
                )

    def target(self, i: int) -> Target:
        start, count, boxes, labels = self._tables[int(self.index.shard[i])]
        row = int(self.index.row[i])
        first, n = int(start[row]), int(count[row])
        return {
            "boxes": torch.from_numpy(boxes[first : first + n].astype(np.float32)).reshape(-1, 4),
            "labels": torch.from_numpy(labels[first : first + n].astype(np.int64) + 1),
        }

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:  # type: ignore[override]
        image = self._memory[i] if self._memory is not None else self._read(i)
        return torch.from_numpy(np.ascontiguousarray(image)), self.target(i)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, Target]]:  # type: ignore[override]
        return [self[i] for i in indices]

    @staticmethod
    def collate(batch: list[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, list[Target]]:
        """Images stack (one size after ingest); targets stay a list (boxes vary in number)."""
        return torch.stack([b[0] for b in batch]), [b[1] for b in batch]
