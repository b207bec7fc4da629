"""Classification's vocabulary (torch-free): what the spec, sweeps and status read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import TaskInfo

if TYPE_CHECKING:
    from ...spec.errors import Problem
    from ...spec.load import LoadedSpec

ARCHITECTURES = (
    "googlenet",
    "resnet18",
    "resnet50",
    "densenet121",
    "mobilenet_v3_large",
    "efficientnet_b0",
)


def check(loaded: LoadedSpec) -> list[Problem]:
    """A classifier has no limits beyond the schema's."""
    return []


INFO = TaskInfo(
    name="classify",
    title="classification",
    archs=ARCHITECTURES,
    pretrained=("imagenet", "none"),
    pretrained_path=True,
    val_metrics=("val_accuracy",),
    selection="val_accuracy",
    selection_label="val acc",
    mode="max",
    rank_by=("accuracy", "balanced_accuracy", "macro_f1", "roc_auc"),
    outputs=("class", "probabilities", "heatmap"),
    predictions_suffix=".csv",  # a row of class probabilities and the decision per file
    check=check,
    catalog="xvhpc.data.catalog:build_catalog",
    review_formats=("labelstudio", "coco"),
)
