"""Segmentation's vocabulary (torch-free) and the limits of ``task: segment`` in a spec.

Semantic segmentation: a class per pixel, from PNG label maps (``data.format: folders``) or COCO
polygons / RLE (``data.format: coco``); 255 is the ignore index throughout. Instance segmentation
is the Mask R-CNN architectures (``INSTANCE_ARCHS``: the arch is the mode, so every step that
holds a spec or a bundle knows it): COCO data only, an annotation per object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import TaskInfo, classifier_only, refuse

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
    # instance segmentation (Mask R-CNN): a tiny one for CPU tests and the demo, torchvision's
    "maskrcnn_tiny",
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2",
)
INSTANCE_ARCHS = ("maskrcnn_tiny", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
SEMANTIC_ARCHS = tuple(a for a in ARCHITECTURES if a not in INSTANCE_ARCHS)
# imagenet: a semantic model's backbone from the offline cache; coco: a Mask R-CNN's own weights
PRETRAINED = ("imagenet", "coco", "none")
NO_WEIGHTS = ("unet_tiny", "maskrcnn_tiny")  # archs without pretrained weights
IGNORE = 255  # the mask value of pixels that count for no class (crowd regions, padding)


def is_instance(arch: str) -> bool:
    """Whether ``arch`` segments instances (Mask R-CNN) rather than classes per pixel."""
    return arch in INSTANCE_ARCHS


def _mode(loaded: LoadedSpec) -> list[Problem]:
    """``model.mode`` (optional) agrees with the arch: instance is Mask R-CNN, semantic the rest."""
    mode, arch = loaded.spec.model.mode, loaded.spec.model.arch
    if mode == "instance" and not is_instance(arch):
        why = f"{arch} gives a class per pixel; instance segmentation is Mask R-CNN"
        return [loaded.problem("model.arch", why, INSTANCE_ARCHS)]
    if mode == "semantic" and is_instance(arch):
        why = f"{arch} segments instances; semantic segmentation takes"
        return [loaded.problem("model.arch", why, SEMANTIC_ARCHS)]
    return []


def _weights(loaded: LoadedSpec) -> list[Problem]:
    """model.pretrained: imagenet for the semantic models, coco for Mask R-CNN, none for any."""
    arch, pretrained = loaded.spec.model.arch, loaded.spec.model.pretrained
    if pretrained == "none" or pretrained not in PRETRAINED:
        return []  # an unknown name: spec/task.py's problem, with the choices
    if arch in NO_WEIGHTS:
        return [loaded.problem("model.pretrained", f"{arch} has no pretrained weights", ("none",))]
    fits = ("coco", "none") if is_instance(arch) else ("imagenet", "none")
    if pretrained not in fits:
        kind = "a Mask R-CNN (instance masks)" if is_instance(arch) else "a semantic segmenter"
        return [loaded.problem("model.pretrained", f"{arch} is {kind}: it starts from", fits)]
    return []


def _instance_limits(loaded: LoadedSpec) -> list[Problem]:
    """Instance segmentation reads objects from COCO (an annotation each), no label maps."""
    spec = loaded.spec
    problems = []
    why = f"{spec.model.arch} segments instances: one COCO annotation per object"
    if spec.data.format in ("folders", "csv"):
        problems.append(loaded.problem("data.format", why, ("coco",)))
    elif spec.data.format == "auto" and not str(spec.data.source).lower().endswith(".json"):
        problems.append(
            loaded.problem(
                "data.source",
                f"{why}; a folder of label maps has no objects "
                "(name the COCO .json, data.format: coco)",
            )  # fmt: skip
        )
    if spec.train.class_weights != "none":
        problems.append(
            loaded.problem("train.class_weights", "not supported by Mask R-CNN (its own losses)")
        )
    return problems


def check(loaded: LoadedSpec) -> list[Problem]:
    """What ``task: segment`` does not support, each named by its key."""
    spec = loaded.spec
    problems = _weights(loaded) + _mode(loaded)
    if is_instance(spec.model.arch):
        problems += _instance_limits(loaded)
    t = spec.train
    unsupported = {
        **classifier_only(spec),
        "train.label_smoothing": t.label_smoothing > 0,
        "data.split.select": bool(spec.data.split.select),
    }
    problems += refuse(loaded, "segment", unsupported)
    if spec.data.format == "csv" and not is_instance(spec.model.arch):
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
    outputs=("mask", "areas", "instances"),  # instances: Mask R-CNN archs
    predictions_suffix=".csv",  # a row of per-class areas per image (masks: OUT/masks/)
    check=check,
    catalog="xvhpc.tasks.segment.catalog:build_segmentation_catalog",
    modes=("semantic", "instance"),  # model.mode: optional, it must agree with the arch
)
