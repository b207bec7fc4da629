"""COCO detection metrics: mAP@[.5:.95], mAP@.5, per-class AP, precision-recall curves, with
bootstrap intervals over images (or groups: patients): pycocotools' ``bbox`` scores through the
task-neutral ``stats/cocoap.py`` (segment's instance masks use it too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...stats.cocoap import (
    IOUS,
    RECALL_POINTS,
    ClassMatches,
    ap_figures,
    class_matches,
    run_cocoeval,
    weighted_ap,
)

__all__ = ["IOUS", "ClassMatches", "Found", "Truth", "class_matches", "coco_eval",
           "detection_metrics", "weighted_ap"]  # fmt: skip


@dataclass
class Truth:
    boxes: np.ndarray  # (m, 4) x0, y0, x1, y1
    labels: np.ndarray  # (m,) class index


@dataclass
class Found:
    boxes: np.ndarray  # (k, 4)
    scores: np.ndarray  # (k,)
    labels: np.ndarray  # (k,) class index


def _xywh(box: np.ndarray) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def coco_eval(truth: list[Truth], found: list[Found], classes: list[str]):
    """A COCOeval (``bbox``) of these images after evaluate() and accumulate() (quiet)."""
    gt = []
    for i, t in enumerate(truth):
        for box, label in zip(t.boxes, t.labels, strict=True):
            xywh = _xywh(box)
            gt.append({"image_id": i, "category_id": int(label) + 1, "bbox": xywh,
                       "area": xywh[2] * xywh[3], "iscrowd": 0})  # fmt: skip
    dets = [
        {"image_id": i, "category_id": int(label) + 1, "bbox": _xywh(box), "score": float(score)}
        for i, f in enumerate(found)
        for box, score, label in zip(f.boxes, f.scores, f.labels, strict=True)
    ]
    return run_cocoeval(len(truth), classes, gt, dets, "bbox")


def detection_metrics(
    truth: list[Truth],
    found: list[Found],
    classes: list[str],
    groups: list | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """mAP@[.5:.95], mAP@.5 and each class's AP as ``{value, ci_low, ci_high}``, plus each
    class's precision-recall curve at IoU .5 (pycocotools' precision at 101 recall points)."""
    n = len(truth)
    figures, precision, sampler = ap_figures(
        coco_eval(truth, found, classes), n, classes, groups, resamples, seed
    )
    return {
        **figures,
        "pr_curves": {
            name: [round(float(v), 4) for v in precision[0, :, k]] for k, name in enumerate(classes)
        },
        "recall_points": [round(float(r), 2) for r in RECALL_POINTS],
        "images": n,
        "boxes": int(sum(len(t.boxes) for t in truth)),
        "bootstrap": {"resamples": resamples, "seed": seed, "unit": sampler.unit},
    }
