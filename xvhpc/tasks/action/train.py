"""The action pieces of ``pipeline/train.py``'s task-blind loop: the loss of a batch of clips
(cross-entropy, with a random horizontal flip and brightness jitter of whole clips) and
validation (loss and clip accuracy, summed over ranks)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...data.dataset import ShardDataset
from ...runtime import compat
from ...runtime.distributed import Context, all_reduce_sum
from ...spec.schema import ExperimentSpec
from .models import clip_input


def augment_clips(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each clip (N×3×T×H×W) flipped left-right at random and its brightness jittered, the
    same for all its frames (motion is kept)."""
    n = x.shape[0]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    x = torch.where(flip.view(n, 1, 1, 1, 1), x.flip(4), x)
    jitter = (torch.rand(n, generator=generator) - 0.5) * 0.2
    return x + jitter.view(n, 1, 1, 1, 1).to(x.device)


def action_loss(
    spec: ExperimentSpec, train_set: ShardDataset, num_classes: int, device: torch.device
) -> Callable[..., torch.Tensor]:
    """Cross-entropy of a batch of clips (the ``loss`` hook)."""
    criterion = nn.CrossEntropyLoss(label_smoothing=spec.train.label_smoothing)

    def loss(
        net: nn.Module,
        clips: torch.Tensor,
        labels: torch.Tensor,
        ctx: Context,
        amp_dtype: torch.dtype | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        x = augment_clips(clip_input(clips, ctx.device), generator)
        with compat.autocast(ctx.device.type, amp_dtype):
            logits = net(x)
        return criterion(logits.float(), labels.to(ctx.device).long())

    return loss


def batches(dataset: ShardDataset, indices: list[int], size: int):
    """(uint8 clips, int64 labels) of ``indices`` in order, ``size`` at a time."""
    for start in range(0, len(indices), size):
        items = [dataset[i] for i in indices[start : start + size]]
        yield torch.stack([b[0] for b in items]), torch.tensor([b[1] for b in items])


@torch.no_grad()
def validate_clips(
    model: nn.Module, dataset: ShardDataset, ctx: Context, batch_size: int, classes: list[str]
) -> dict[str, float]:
    """Validation loss and clip accuracy; ranks take disjoint slices and sum."""
    criterion = nn.CrossEntropyLoss(reduction="sum")
    model.eval()
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))
    total_loss, right = 0.0, 0
    for clips, labels in batches(dataset, indices, batch_size):
        y = labels.to(ctx.device)
        logits = model(clip_input(clips, ctx.device)).float()
        total_loss += float(criterion(logits, y))
        right += int((logits.argmax(1) == y).sum())
    model.train()
    total_loss, seen, right_all = all_reduce_sum(
        ctx, [total_loss, float(len(indices)), float(right)]
    )
    return {
        "val_loss": total_loss / max(seen, 1),
        "val_clip_accuracy": right_all / max(seen, 1),
        "val_samples": int(seen),
    }
