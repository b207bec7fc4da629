"""Detection's vocabulary (torch-free) and the limits of ``task: detect`` in a spec."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import TaskInfo, classifier_only, refuse

if TYPE_CHECKING:
    from ...spec.errors import Problem
    from ...spec.load import LoadedSpec

# torchvision's detection zoo, plus a tiny CPU detector (models.py) for tests and the demo
ARCHITECTURES = (
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "retinanet_resnet50_fpn_v2",
    "ssd300_vgg16",
    "ssdlite320_mobilenet_v3_large",
    "fcos_resnet50_fpn",
    "fcos_tiny",
)
PRETRAINED = ("coco", "none")  # coco: the detector's weights from the offline cache
EXACT_ROTATIONS = (0, 90, 180, 270)  # the only angles that map a box to a box exactly


def check(loaded: LoadedSpec) -> list[Problem]:
    """What ``task: detect`` does not support, each named by its key."""
    spec = loaded.spec
    problems = []
    if spec.model.pretrained == "coco" and spec.model.arch == "fcos_tiny":
        problems.append(loaded.problem("model.pretrained", "fcos_tiny has no pretrained weights"))
    t = spec.train
    unsupported = {
        **classifier_only(spec),
        "train.class_weights": t.class_weights != "none",
        "train.label_smoothing": t.label_smoothing > 0,
        "data.split.folds": spec.data.split.folds is not None,
        "data.split.select": bool(spec.data.split.select),
        "train.final_fit": t.final_fit,
    }
    problems += refuse(loaded, "detect", unsupported)
    if spec.data.format == "folders":
        problems.append(
            loaded.problem(
                "data.format", "task: detect reads boxes from coco or csv", ("coco", "csv")
            )
        )
    for label, aug in spec.data.augment.items():
        bad = [a for a in aug.rotate if a % 360 not in EXACT_ROTATIONS]
        if bad:
            problems.append(
                loaded.problem(
                    f"data.augment.{label}.rotate",
                    f"{bad}: task: detect rotates by multiples of 90 only (boxes stay exact)",
                )
            )
    return problems


INFO = TaskInfo(
    name="detect",
    title="object detection",
    archs=ARCHITECTURES,
    pretrained=PRETRAINED,
    pretrained_path=False,
    val_metrics=("val_map50", "val_map"),
    selection="val_map50",
    selection_label="val mAP@.5",
    mode="max",
    rank_by=("map", "map50"),
    outputs=("boxes",),
    predictions_suffix=".jsonl",  # a JSON line of boxes per file
    check=check,
    catalog="xvhpc.tasks.detect.catalog:build_detection_catalog",
    review_formats=("labelstudio", "coco"),
)
