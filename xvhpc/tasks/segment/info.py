"""Segmentation's vocabulary (torch-free) and the limits of ``task: segment`` in a spec.

Semantic segmentation: a class per pixel, from PNG label maps (``data.format: folders``) or COCO
polygons / RLE (``data.format: coco``); 255 is the ignore index throughout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import TaskInfo

if TYPE_CHECKING:
    from ...spec.errors import Problem
    from ...spec.load import LoadedSpec

# a tiny CPU U-Net (models.py) for tests and the demo first (the contract suite runs a task's
# first architecture), then segmentation-models-pytorch's U-Net/FPN and torchvision's zoo
ARCHITECTURES = (
    "unet_tiny",
    "unet_resnet18",
    "unet_resnet34",
    "fpn_resnet34",
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_resnet50",
    "fcn_resnet50",
    "lraspp_mobilenet_v3_large",
)
PRETRAINED = ("imagenet", "none")  # imagenet: the backbone's weights from the offline cache
NO_WEIGHTS = ("unet_tiny",)  # archs without pretrained weights
IGNORE = 255  # the mask value of pixels that count for no class (crowd regions, padding)


def check(loaded: LoadedSpec) -> list[Problem]:
    """What ``task: segment`` does not support, each named by its key."""
    spec = loaded.spec
    problems = []
    if spec.model.pretrained == "imagenet" and spec.model.arch in NO_WEIGHTS:
        problems.append(
            loaded.problem("model.pretrained", f"{spec.model.arch} has no pretrained weights")
        )
    t = spec.train
    unsupported = {
        "model.import": spec.model.import_ is not None,
        "model.freeze_backbone": spec.model.freeze_backbone,
        "train.backend": t.backend == "horovod",
        "train.balanced_sampling": t.balanced_sampling,
        "train.label_smoothing": t.label_smoothing > 0,
        "data.split.select": bool(spec.data.split.select),
    }
    for key, used in unsupported.items():
        if used:
            problems.append(loaded.problem(key, "not supported with task: segment"))
    if spec.data.format == "csv":
        problems.append(
            loaded.problem(
                "data.format",
                "task: segment reads masks from folders (images/ + masks/) or coco",
                ("folders", "coco"),
            )
        )
    # data.augment rotate: any angle (masks turn with nearest-neighbour, the corners 255)
    return problems


INFO = TaskInfo(
    name="segment",
    title="segmentation",
    archs=ARCHITECTURES,
    pretrained=PRETRAINED,
    pretrained_path=False,
    val_metrics=("val_miou", "val_dice"),
    selection="val_miou",
    selection_label="val mIoU",
    mode="max",
    rank_by=("miou", "dice"),
    outputs=("mask", "areas"),
    predictions_suffix=".csv",  # a row of per-class areas per image (masks: OUT/masks/)
    check=check,
    catalog="xvhpc.tasks.segment.catalog:build_segmentation_catalog",
)
