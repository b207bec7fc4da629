"""The classification pieces of ``pipeline/train.py``'s task-blind loop: the loss of a batch (on
online-augmented images, class-weighted and smoothed as the spec says) and validation
(loss and accuracy); the ``loss`` and ``validate`` hooks of ``task.py``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ...data.dataset import Index, ShardDataset, online_augment, to_model_input
from ...models.zoo import memory_format
from ...runtime import compat
from ...runtime.distributed import Context, all_reduce_sum
from ...spec.schema import ExperimentSpec


def class_weights(index: Index, classes: int) -> torch.Tensor:
    """Inverse class frequencies of the training records, mean 1 (``class_weights: auto``)."""
    counts = np.bincount(index.labels, minlength=classes).astype(np.float64)
    weights = counts.sum() / np.maximum(counts, 1) / classes
    return torch.tensor(weights, dtype=torch.float32)


def classifier_loss(
    spec: ExperimentSpec, train_set: ShardDataset, num_classes: int, device: torch.device
) -> Callable[..., torch.Tensor]:
    """The cross-entropy of a batch of online-augmented images (``loss`` hook)."""
    t = spec.train
    weight = (
        class_weights(train_set.index, num_classes).to(device)
        if t.class_weights == "auto"
        else None
    )
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=t.label_smoothing)
    layout = memory_format(spec, device)

    def loss(
        net: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        ctx: Context,
        amp_dtype: torch.dtype | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """One batch: flips and jitter seeded by ``generator`` (resumes are exact), then CE."""
        x = online_augment(to_model_input(images, ctx.device), generator)
        x = x.contiguous(memory_format=layout)
        y = labels.to(ctx.device, non_blocking=True)
        with compat.autocast(ctx.device.type, amp_dtype):
            return criterion(net(x), y)

    return loss


@torch.no_grad()
def validate_classifier(
    model: nn.Module, dataset: ShardDataset, ctx: Context, batch_size: int, classes: list[str]
) -> dict[str, float]:
    """Validation loss (unweighted cross-entropy) and accuracy; ranks take disjoint slices and
    sum their counts."""
    criterion = nn.CrossEntropyLoss()
    model.eval()
    total_loss = correct = seen = 0.0
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))
    for start in range(0, len(indices), batch_size):
        batch = [dataset[i] for i in indices[start : start + batch_size]]
        images = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch], device=ctx.device)
        logits = model(to_model_input(images, ctx.device))
        total_loss += float(criterion(logits, labels)) * len(batch)
        correct += float((logits.argmax(1) == labels).sum())
        seen += len(batch)
    model.train()
    total_loss, correct, seen = all_reduce_sum(ctx, [total_loss, correct, seen])
    return {
        "val_loss": total_loss / max(seen, 1),
        "val_accuracy": correct / max(seen, 1),
        "val_samples": int(seen),
    }
