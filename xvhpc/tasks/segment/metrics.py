"""Segmentation figures from pixel confusion matrices (numpy only): per-class IoU and Dice,
their means, pixel accuracy, with bootstrap 95 % intervals over images (or the catalog's groups).

Each image contributes its own K×K confusion matrix (rows true, columns predicted, ignore-index
pixels left out); a bootstrap resample is a weighted sum of those matrices, so every resample's
figures come from one matrix product (``stats/bootstrap.py``'s plan)."""

from __future__ import annotations

import numpy as np

from ...stats.bootstrap import Resampler, interval

IGNORE = 255  # the mask value that is scored nowhere (unlabelled, crowd, letterbox padding)


def confusion(truth: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """The K×K pixel confusion matrix (int64) of one or more masks; ``IGNORE`` pixels are left
    out (so is any true value ≥ k)."""
    t = np.asarray(truth).reshape(-1).astype(np.int64)
    p = np.asarray(predicted).reshape(-1).astype(np.int64)
    keep = t < k
    return np.bincount(t[keep] * k + p[keep], minlength=k * k).reshape(k, k)


def scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """IoU and Dice per class and their means over the classes present (in truth or
    prediction), and pixel accuracy, for confusion matrices ``(..., K, K)``; NaN where undefined."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    fp = cm.sum(-2) - tp
    fn = cm.sum(-1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        union = tp + fp + fn
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
        dice = np.where(union > 0, 2 * tp / np.where(union > 0, union + tp, 1), np.nan)
        total = cm.sum((-2, -1))
        accuracy = np.where(total > 0, tp.sum(-1) / np.where(total > 0, total, 1), np.nan)
        present = (union > 0).sum(-1)
        miou = np.where(present > 0, np.nansum(iou, -1) / np.maximum(present, 1), np.nan)
        mdice = np.where(present > 0, np.nansum(dice, -1) / np.maximum(present, 1), np.nan)
    return {"iou": iou, "dice": dice, "miou": miou, "dice_mean": mdice, "pixel_accuracy": accuracy}


def segmentation_metrics(
    per_image: np.ndarray,
    classes: list[str],
    groups: list[str] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    unit: str | None = None,
) -> dict:
    """metrics.json's figures from each image's confusion matrix ``(n, K, K)``: ``miou``,
    ``dice`` (means over the classes present), ``pixel_accuracy``, ``per_class_iou`` and
    ``per_class_dice`` (each ``{value, ci_low, ci_high}``), the pooled ``confusion`` matrix,
    and the counts. ``resamples`` 0: no intervals; ``unit``: what a group is ("group", "image")."""
    per_image = np.asarray(per_image, dtype=np.float64).reshape(-1, len(classes), len(classes))
    n, k = per_image.shape[0], len(classes)
    total = per_image.sum(0)
    point = scores(total)
    plan = Resampler.build(n, groups, resamples, seed, unit)
    flat = per_image.reshape(n, k * k)
    drawn = plan.collect(lambda w: _flatten(scores((w @ flat).reshape(len(w), k, k))))
    boot = drawn or {}
    return {
        "miou": interval(float(point["miou"]), boot.get("miou")),
        "dice": interval(float(point["dice_mean"]), boot.get("dice_mean")),
        "pixel_accuracy": interval(float(point["pixel_accuracy"]), boot.get("pixel_accuracy")),
        "per_class_iou": {
            c: interval(float(point["iou"][i]), boot["iou"][:, i] if boot else None)
            for i, c in enumerate(classes)
        },
        "per_class_dice": {
            c: interval(float(point["dice"][i]), boot["dice"][:, i] if boot else None)
            for i, c in enumerate(classes)
        },
        "confusion": total.astype(np.int64).tolist(),
        "images": n,
        "pixels": int(total.sum()),
        "bootstrap": {"resamples": plan.resamples if n else 0, "unit": plan.unit},
    }


def _flatten(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: s[key] for key in ("iou", "dice", "miou", "dice_mean", "pixel_accuracy")}
