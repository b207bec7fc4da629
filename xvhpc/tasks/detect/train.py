"""The detection pieces of ``pipeline/train.py``'s task-blind loop: the loss of a batch and
validation (the ``loss`` and ``validate`` hooks of ``task.py``).

Everything else (DDP, launchers, requeue, AMP, checkpoints, progress, lr warm-up) is the loop's.
"""

from __future__ import annotations

import torch
from torch import nn

from ...runtime import compat
from ...runtime.distributed import Context, all_reduce_sum
from .dataset import DetectionDataset, Target, detector_input
from .metrics import Found, Truth, detection_metrics


def detection_loss(
    net: nn.Module,
    images: torch.Tensor,
    targets: list[Target],
    ctx: Context,
    amp_dtype: torch.dtype | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The summed losses torchvision's detector returns in training mode (no online
    augmentation: offline augmentation moves the boxes, so ``generator`` is unused)."""
    moved = [{k: v.to(ctx.device) for k, v in t.items()} for t in targets]
    with compat.autocast(ctx.device.type, amp_dtype):
        losses = net(detector_input(images, ctx.device), moved)
    return sum(losses.values())


def found(outputs: list[dict[str, torch.Tensor]]) -> list[Found]:
    """A detector's outputs (eval mode) as class indices (model label - 1). Label 0 is the
    background: FCOS and RetinaNet can still output it (their top-k runs over every label),
    so those detections are dropped rather than read as class -1 (the last class)."""
    out = []
    for o in outputs:
        real = (o["labels"] > 0).cpu().numpy()
        out.append(
            Found(
                o["boxes"].float().cpu().numpy()[real],
                o["scores"].float().cpu().numpy()[real],
                o["labels"].cpu().numpy()[real] - 1,
            )
        )
    return out


def _frozen_norms(model: nn.Module) -> None:
    """Training mode (losses) without updating batch-norm statistics on validation data."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


@torch.no_grad()
def validate_detector(
    model: nn.Module, dataset: DetectionDataset, ctx: Context, batch_size: int, classes: list[str]
) -> dict[str, float]:
    """Validation loss, mAP and mAP@.5 (no intervals: that is evaluate's work). Ranks take
    disjoint slices; the matches need every image, so rank slices are gathered."""
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))
    truth, outputs, total_loss = [], [], 0.0
    for start in range(0, len(indices), batch_size):
        images, targets = dataset.collate([dataset[i] for i in indices[start : start + batch_size]])
        moved = [{k: v.to(ctx.device) for k, v in t.items()} for t in targets]
        _frozen_norms(model)
        total_loss += float(sum(model(detector_input(images, ctx.device), moved).values())) * len(
            targets
        )
        model.eval()
        outputs += found(model(detector_input(images, ctx.device)))
        truth += [Truth(t["boxes"].numpy(), t["labels"].numpy() - 1) for t in targets]
    model.train()
    total_loss, seen = all_reduce_sum(ctx, [total_loss, float(len(truth))])
    if ctx.world_size > 1:
        truth, outputs = _gather(truth), _gather(outputs)
    result = detection_metrics(truth, outputs, classes, resamples=0)
    return {
        "val_loss": total_loss / max(seen, 1),
        "val_map": result["map"]["value"] or 0.0,
        "val_map50": result["map50"]["value"] or 0.0,  # TaskInfo.selection: keeps the best bundle
        "val_samples": int(seen),
    }


def _gather(items: list) -> list:
    import torch.distributed as dist

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]
