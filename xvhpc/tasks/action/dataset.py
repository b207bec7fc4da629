"""Action samples from shards: a clip (CLIP_FRAMES × size × size × C uint8) and its class."""

from __future__ import annotations

import json

import numpy as np
import torch

from ...data.dataset import ShardDataset

Sample = tuple[torch.Tensor, int]


class ActionDataset(ShardDataset):
    """``(uint8 T×H×W×C clip, class index)`` from each shard's ``clips`` (read lazily per
    worker, as the images are); ``info(i)`` is the clip's kind, times and video's segments."""

    def clips(self, idx: np.ndarray) -> np.ndarray:
        """The clips of samples ``idx`` (uint8, N×T×H×W×C), in the order asked."""
        out = [
            self._file(int(s))["clips"][int(r)]
            for s, r in zip(
                self.index.shard[idx].tolist(), self.index.row[idx].tolist(), strict=True
            )
        ]
        return np.stack(out) if out else np.zeros((0, 0, 0, 0, 0), np.uint8)

    def info(self, i: int) -> dict:
        raw = self._file(int(self.index.shard[i]))["clip_info"][int(self.index.row[i])]
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)

    def middle_frame(self, i: int) -> np.ndarray:
        """The clip's middle frame (the shard's image of the record)."""
        return self._memory[i] if self._memory is not None else self._read(i)

    def __getitem__(self, i: int) -> Sample:
        return torch.from_numpy(self.clips(np.array([i]))[0]), int(self.index.labels[i])

    def __getitems__(self, indices: list[int]) -> list[Sample]:
        clips = torch.from_numpy(self.clips(np.asarray(indices, dtype=np.int64)))
        return list(zip(clips, self.index.labels[indices].tolist(), strict=True))

    @staticmethod
    def collate(batch: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips (N×T×H×W×C uint8) and classes (N int64)."""
        return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch])
