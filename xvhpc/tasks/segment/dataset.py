"""Segmentation samples from shards: the image (as ``ShardDataset`` gives it) and its mask."""

from __future__ import annotations

import numpy as np
import torch

from ...data.dataset import Index, ShardDataset

Sample = tuple[torch.Tensor, torch.Tensor]


class SegmentationDataset(ShardDataset):
    """``(uint8 HxWxC image, int64 HxW mask)``: mask values are class indices, 255 ignored.

    Masks are read from each shard's ``masks`` dataset (gzip) as the images are, lazily per
    worker; ``cache_in_memory`` keeps both in memory."""

    def __init__(self, index: Index, cache_in_memory: bool = False, chunk_cache_mb: int = 64):
        super().__init__(index, cache_in_memory, chunk_cache_mb)
        self._mask_memory: np.ndarray | None = None
        if cache_in_memory and len(index):
            self._mask_memory = self.masks(np.arange(len(index)))
            self._close()

    def masks(self, idx: np.ndarray) -> np.ndarray:
        """The masks of samples ``idx`` (uint8, N×H×W), in the order asked."""
        if self._mask_memory is not None:
            return self._mask_memory[idx]
        shards, rows = self.index.shard[idx], self.index.row[idx]
        out = []
        for shard, row in zip(shards.tolist(), rows.tolist(), strict=True):
            out.append(self._file(int(shard))["masks"][int(row)])
        return np.stack(out) if out else np.zeros((0, 0, 0), np.uint8)

    def mask(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.masks(np.array([i]))[0].astype(np.int64))

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        image = self._memory[i] if self._memory is not None else self._read(i)
        return torch.from_numpy(np.ascontiguousarray(image)), self.mask(i)

    def __getitems__(self, indices: list[int]) -> list[Sample]:  # type: ignore[override]
        idx = np.asarray(indices, dtype=np.int64)
        images = self._memory[idx] if self._memory is not None else self._read_many(idx)
        masks = torch.from_numpy(self.masks(idx).astype(np.int64))
        return list(zip(torch.from_numpy(np.ascontiguousarray(images)), masks, strict=True))

    @staticmethod
    def collate(batch: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N×H×W×C uint8) and masks (N×H×W int64) stacked: one size after ingest."""
        return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
