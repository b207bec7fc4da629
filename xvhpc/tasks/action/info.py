"""Action detection's vocabulary (torch-free) and the limits of ``task: action`` in a spec.

Temporal action detection: labels are time segments per video (a CSV ``video,label,start,end``
or an ActivityNet-like JSON); ingest cuts each video into fixed clips (``CLIP_FRAMES`` frames,
sliding by ``CLIP_STRIDE``, plus one centred on each segment), each labelled with the action
that covers most of it or ``background``; a clip classifier trains on them, and localisation
slides it over a whole video, joins runs of windows into segments and keeps the best by
temporal non-maximum suppression. Scored by per-class AP at temporal IoU 0.3/0.5/0.7.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import TaskInfo, classifier_only, refuse

if TYPE_CHECKING:
    from ...spec.errors import Problem
    from ...spec.load import LoadedSpec

# a tiny 3-D conv net for CPU tests and the demo first (the contract suite runs a task's first
# architecture), then torchvision's video classifiers (Kinetics-400 weights from the cache)
ARCHITECTURES = ("c3d_tiny", "r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v1_b")
PRETRAINED = ("kinetics", "none")  # kinetics: torchvision's Kinetics-400 weights, offline cache
NO_WEIGHTS = ("c3d_tiny",)
BACKGROUND = "background"  # class 0: a clip no action covers for at least half its length
CLIP_FRAMES = 8  # frames of one clip (data.video.fps sets how much time that is)
CLIP_STRIDE = 4  # frames between the starts of consecutive sliding windows
IOU_THRESHOLDS = (0.3, 0.5, 0.7)  # temporal IoU of a detection with a true segment


def check(loaded: LoadedSpec) -> list[Problem]:
    """What ``task: action`` does not support, each named by its key."""
    spec = loaded.spec
    problems = []
    if spec.model.pretrained == "kinetics" and spec.model.arch in NO_WEIGHTS:
        problems.append(
            loaded.problem("model.pretrained", f"{spec.model.arch} has no pretrained weights")
        )
    t = spec.train
    unsupported = {
        **classifier_only(spec),
        "train.class_weights": t.class_weights != "none",
        "data.split.folds": spec.data.split.folds is not None,
        "data.split.select": bool(spec.data.split.select),
        "data.augment": bool(spec.data.augment),
        "train.final_fit": t.final_fit,
    }
    problems += refuse(loaded, "action", unsupported)
    if spec.data.resize == "tile":
        problems.append(
            loaded.problem(
                "data.resize",
                "a clip is one window of each frame",
                ("squash", "letterbox", "center_crop"),
            )
        )
    if spec.data.format == "folders":
        problems.append(
            loaded.problem(
                "data.format",
                "task: action reads time segments from a CSV (video,label,start,end) or an "
                "ActivityNet-like JSON",
                ("auto", "csv", "coco"),
            )
        )
    return problems


INFO = TaskInfo(
    name="action",
    title="action detection",
    archs=ARCHITECTURES,
    pretrained=PRETRAINED,
    pretrained_path=False,
    val_metrics=("val_clip_accuracy",),  # clip accuracy: what training can measure per round
    selection="val_clip_accuracy",
    selection_label="val clip acc",
    mode="max",
    rank_by=("tmap", "tmap50"),  # temporal mAP: mean over tIoU 0.3/0.5/0.7; at tIoU 0.5
    outputs=("segments",),
    predictions_suffix=".jsonl",  # a JSON line of segments per video (and predictions.csv)
    check=check,
)
