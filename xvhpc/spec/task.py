"""Checks that tie ``task: detect`` to the rest of a spec (pure, no torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import Problem
from .schema import ARCHITECTURES, DETECTION_ARCHITECTURES

if TYPE_CHECKING:
    from .load import LoadedSpec

DETECT_PRETRAINED = ("coco", "none")  # coco: the detector's weights from the offline cache
EXACT_ROTATIONS = (0, 90, 180, 270)  # the only angles that map a box to a box exactly


def check_task(loaded: LoadedSpec) -> list[Problem]:
    """Problems of a spec's model and data for its task (an arch of the other task, ...)."""
    spec = loaded.spec
    if spec.task == "classify":
        if spec.model.arch in DETECTION_ARCHITECTURES:
            return [
                loaded.problem(
                    "model.arch",
                    f"{spec.model.arch} is a detection model; set task: detect, or pick a classifier",
                    ARCHITECTURES,
                )
            ]
        return []
    problems = []
    if spec.model.arch not in DETECTION_ARCHITECTURES:
        problems.append(
            loaded.problem(
                "model.arch",
                f"{spec.model.arch!r} is a classifier; task: detect needs a detection model",
                DETECTION_ARCHITECTURES,
            )
        )
    if spec.model.pretrained not in DETECT_PRETRAINED:
        problems.append(
            loaded.problem(
                "model.pretrained",
                f"{spec.model.pretrained!r}: a detector starts from coco (the offline weights "
                "cache: xvhpc weights fetch ARCH) or none",
                DETECT_PRETRAINED,
            )
        )
    elif spec.model.pretrained == "coco" and spec.model.arch == "fcos_tiny":
        problems.append(loaded.problem("model.pretrained", "fcos_tiny has no pretrained weights"))
    t = spec.train
    unsupported = {
        "model.import": spec.model.import_ is not None,
        "model.freeze_backbone": spec.model.freeze_backbone,
        "train.backend": t.backend == "horovod",
        "train.balanced_sampling": t.balanced_sampling,
        "train.class_weights": t.class_weights != "none",
        "train.label_smoothing": t.label_smoothing > 0,
        "data.split.folds": spec.data.split.folds is not None,
        "data.split.select": bool(spec.data.split.select),
        "train.final_fit": t.final_fit,
    }
    for key, used in unsupported.items():
        if used:
            problems.append(loaded.problem(key, "not supported with task: detect"))
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
