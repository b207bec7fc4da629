"""The segmentation pieces of ``pipeline/train.py``'s task-blind loop: the loss of a batch
(cross-entropy with the ignore index, optionally class-weighted, plus MONAI's soft Dice, on
jointly flipped images and masks) and validation (loss, mIoU and mean Dice from a confusion
matrix summed over ranks: the same matrix evaluate's figures come from)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...data.dataset import ShardDataset, to_model_input
from ...models.zoo import memory_format
from ...runtime import compat
from ...runtime.distributed import Context, all_reduce_sum
from ...spec.schema import ExperimentSpec
from .dataset import SegmentationDataset
from .info import is_instance
from .metrics import IGNORE, scores


def dice_loss() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """MONAI's masked soft Dice (softmax probabilities against one-hot masks, summed over the
    batch), ignore-index pixels masked out: ``loss(logits, target)``. MONAI is imported here,
    so only a segmentation run loads it."""
    from monai.losses import MaskedDiceLoss

    # softmax and one-hot here, not in MONAI: MaskedDiceLoss masks before its own activation
    # and one-hot, which would leave ignored pixels at 1/K and class 0 instead of out of the sums
    dice = MaskedDiceLoss(batch=True)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1]
        valid = (target != IGNORE).unsqueeze(1).float()
        onehot = F.one_hot(target.clamp(0, k - 1).long(), k).permute(0, 3, 1, 2).float()
        return dice(logits.float().softmax(1), onehot, mask=valid)

    return loss


def pixel_weights(dataset: SegmentationDataset, classes: int, chunk: int = 256) -> torch.Tensor:
    """``class_weights: auto`` for segmentation: median-frequency balancing (Eigen & Fergus,
    2015) of the training masks' pixel counts, ignore pixels left out, scaled to mean 1; a class
    with no pixel gets weight 1. Masks are read ``chunk`` at a time (bounded memory)."""
    counts = np.zeros(classes, np.float64)
    for start in range(0, len(dataset), chunk):
        masks = dataset.masks(np.arange(start, min(start + chunk, len(dataset))))
        counts += np.bincount(masks.reshape(-1), minlength=256)[:classes]
    present = counts > 0
    weights = np.ones(classes, np.float64)
    if present.any():
        freq = counts[present] / counts[present].sum()
        weights[present] = np.median(freq) / freq
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def joint_augment(
    x: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Online augmentation that moves the mask with the image: a random horizontal flip of
    both, and a small brightness jitter of the image only."""
    n = x.shape[0]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    masks = torch.where(flip.view(n, 1, 1), masks.flip(2), masks)
    jitter = (torch.rand(n, generator=generator) - 0.5) * 0.2
    return x + jitter.view(n, 1, 1, 1).to(x.device), masks


def segmentation_loss(
    spec: ExperimentSpec, train_set: ShardDataset, num_classes: int, device: torch.device
) -> Callable[..., torch.Tensor]:
    """Cross-entropy (ignore index 255; ``class_weights: auto``: median-frequency weights) +
    MONAI's soft Dice of a batch (the ``loss`` hook); Mask R-CNN's own losses for an instance
    arch (``maskrcnn.py``)."""
    if is_instance(spec.model.arch):
        from .maskrcnn import instance_loss

        assert isinstance(train_set, SegmentationDataset)
        return instance_loss(train_set)
    weight = None
    if spec.train.class_weights == "auto" and isinstance(train_set, SegmentationDataset):
        weight = pixel_weights(train_set, num_classes).to(device)
    criterion = nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE)
    dice = dice_loss()
    layout = memory_format(spec, device)

    def loss(
        net: nn.Module,
        images: torch.Tensor,
        masks: torch.Tensor,
        ctx: Context,
        amp_dtype: torch.dtype | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        x = to_model_input(images, ctx.device)
        y = masks.to(ctx.device, non_blocking=True).long()
        x, y = joint_augment(x, y, generator)
        x = x.contiguous(memory_format=layout)
        with compat.autocast(ctx.device.type, amp_dtype):
            logits = net(x)
        return criterion(logits.float(), y) + dice(logits, y)

    return loss


def batches(dataset: ShardDataset, indices: list[int], size: int):
    """(uint8 NHWC images, int64 NHW masks) of ``indices`` in order, ``size`` at a time."""
    for start in range(0, len(indices), size):
        items = [dataset[i] for i in indices[start : start + size]]
        yield (
            torch.stack([torch.as_tensor(b[0]) for b in items]),
            torch.stack([torch.as_tensor(b[1]) for b in items]).long(),
        )


@torch.no_grad()
def validate_segmenter(
    model: nn.Module, dataset: ShardDataset, ctx: Context, batch_size: int, classes: list[str]
) -> dict[str, float]:
    """Validation loss (CE + Dice per batch, image-weighted), mIoU and mean Dice from the pixel
    confusion matrix; ranks take disjoint slices and sum the matrix and the loss. A Mask R-CNN
    is scored on the label maps its objects paint (``maskrcnn.validate_instances``)."""
    k = len(classes)
    from .maskrcnn import is_maskrcnn, validate_instances

    if is_maskrcnn(model):
        assert isinstance(dataset, SegmentationDataset)
        return validate_instances(model, dataset, ctx, batch_size, k)
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE)
    dice = dice_loss()
    model.eval()
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))
    cm = torch.zeros(k * k, dtype=torch.float64)
    total_loss = 0.0
    for images, masks in batches(dataset, indices, batch_size):
        y = masks.to(ctx.device)
        logits = model(to_model_input(images, ctx.device)).float()
        batch_loss = criterion(logits, y) + dice(logits, y)
        if torch.isfinite(batch_loss):  # a batch of ignore-only masks: no loss to add
            total_loss += float(batch_loss) * len(masks)
        t, p = y.reshape(-1), logits.argmax(1).reshape(-1)
        keep = t < k
        cm += torch.bincount(t[keep] * k + p[keep], minlength=k * k).double().cpu()
    model.train()
    summed = all_reduce_sum(ctx, [total_loss, float(len(indices)), *cm.tolist()])
    total_loss, seen = summed[0], summed[1]
    figures = scores(np.asarray(summed[2:]).reshape(k, k))
    return {
        "val_loss": total_loss / max(seen, 1),
        "val_miou": float(np.nan_to_num(figures["miou"])),
        "val_dice": float(np.nan_to_num(figures["dice_mean"])),
        "val_samples": int(seen),
    }
