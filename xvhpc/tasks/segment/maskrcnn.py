"""Instance segmentation's pieces of the loop (Mask R-CNN through the same ``loss`` and
``validate`` hooks as the semantic models): the loss is the sum of torchvision's loss dict;
validation scores the label map painted from the predicted objects (score ≥ .5, mask ≥ .5)
against the true label map, so ``val_miou`` picks the checkpoint exactly as for semantic runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...models.detection import detector_input
from ...runtime import compat
from ...runtime.distributed import Context, all_reduce_sum
from .dataset import SegmentationDataset, Target
from .instances import paint
from .metrics import confusion, scores


@dataclass
class Objects:
    """One image's predicted objects (numpy): mask probabilities n×H×W, classes (≥ 1: data
    class indices, background 0 never), scores and boxes (x0, y0, x1, y1)."""

    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def painted(self) -> np.ndarray:
        """The label map these objects paint (``instances.paint``: score ≥ .5, mask ≥ .5)."""
        return paint(self.masks, self.labels, self.scores, self.masks.shape[1:])


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DDP (``module``) or the model itself."""
    return getattr(model, "module", model)


def is_maskrcnn(model: nn.Module) -> bool:
    """Whether ``model`` (DDP-wrapped or not) is a torchvision Mask R-CNN."""
    return (
        hasattr(unwrap(model), "roi_heads")
        and getattr(unwrap(model).roi_heads, "has_mask", lambda: False)()
    )


@torch.no_grad()
def objects_of(model: nn.Module, images: torch.Tensor, device: torch.device) -> list[Objects]:
    """The model's objects (eval mode) for uint8 NHWC images, in the images' pixels."""
    outputs = model(detector_input(images, device))
    size = tuple(images.shape[1:3])
    found = []
    for o in outputs:
        real = o["labels"] > 0
        masks = o["masks"][real, 0].float().cpu().numpy() if "masks" in o else None
        found.append(
            Objects(
                masks if masks is not None else np.zeros((0, *size), np.float32),
                o["labels"][real].cpu().numpy(),
                o["scores"][real].float().cpu().numpy(),
                o["boxes"][real].float().cpu().numpy(),
            )
        )
    return found


def instance_loss(train_set: SegmentationDataset) -> Callable[..., torch.Tensor]:
    """The ``loss`` hook for Mask R-CNN: switches the training set to objects and sums the
    detector's losses (RPN, box, class, mask); offline augmentation moves the id maps."""
    train_set.use_instances()

    def loss(
        net: nn.Module,
        images: torch.Tensor,
        targets: list[Target],
        ctx: Context,
        amp_dtype: torch.dtype | None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        moved = [{k: v.to(ctx.device) for k, v in t.items()} for t in targets]
        with compat.autocast(ctx.device.type, amp_dtype):
            losses = net(detector_input(images, ctx.device), moved)
        return sum(losses.values())

    return loss


def _frozen_norms(model: nn.Module) -> None:
    """Training mode (losses) without updating batch-norm statistics on validation data."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


@torch.no_grad()
def validate_instances(
    model: nn.Module, dataset: SegmentationDataset, ctx: Context, batch_size: int, k: int
) -> dict[str, float]:
    """Validation loss (the detector's summed losses), mIoU and mean Dice of the painted label
    maps (a pixel confusion matrix summed over ranks, as for semantic models)."""
    dataset.use_instances()
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))
    cm = np.zeros((k, k), np.float64)
    total_loss = 0.0
    for start in range(0, len(indices), batch_size):
        part = indices[start : start + batch_size]
        images, targets = dataset.collate([dataset[i] for i in part])
        moved = [{key: v.to(ctx.device) for key, v in t.items()} for t in targets]
        _frozen_norms(model)
        losses = model(detector_input(images, ctx.device), moved)
        total_loss += float(sum(losses.values())) * len(part)
        model.eval()
        truth = dataset.masks(np.asarray(part))
        for t, found in zip(truth, objects_of(model, images, ctx.device), strict=True):
            cm += confusion(t, found.painted(), k)
    model.train()
    summed = all_reduce_sum(ctx, [total_loss, float(len(indices)), *cm.reshape(-1).tolist()])
    figures = scores(np.asarray(summed[2:]).reshape(k, k))
    return {
        "val_loss": summed[0] / max(summed[1], 1),
        "val_miou": float(np.nan_to_num(figures["miou"])),
        "val_dice": float(np.nan_to_num(figures["dice_mean"])),
        "val_samples": int(summed[1]),
    }
