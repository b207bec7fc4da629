"""Segmentation figures from pixel confusion matrices: per-class IoU and Dice, their means,
pixel accuracy, and the 95th-percentile Hausdorff distance (HD95, MONAI's surface distances),
with bootstrap 95 % intervals over images (or the catalog's groups).

Each image contributes its own K×K confusion matrix (rows true, columns predicted, ignore-index
pixels left out); a bootstrap resample is a weighted sum of those matrices, so every resample's
figures come from one matrix product (``stats/bootstrap.py``'s plan)."""

from __future__ import annotations

import warnings

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


def hd95(truth: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """Each class's 95th-percentile Hausdorff distance (pixels) between the true and predicted
    regions of one mask (MONAI's ``compute_hausdorff_distance``); NaN where the class is absent
    from the truth or the prediction (undefined). ``IGNORE`` pixels belong to neither."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    t = torch.as_tensor(np.asarray(truth, np.int64))
    p = torch.as_tensor(np.asarray(predicted, np.int64))
    valid = t < k
    classes = torch.arange(k).view(k, 1, 1)
    truth_hot = ((t == classes) & valid).unsqueeze(0)
    found_hot = ((p == classes) & valid).unsqueeze(0)
    both = (truth_hot.flatten(2).any(2) & found_hot.flatten(2).any(2))[0]
    out = np.full(k, np.nan)
    if bool(both.any()):  # only the classes in both: MONAI warns (and gives inf) otherwise
        with warnings.catch_warnings():  # MONAI's own deprecation notices on its helpers
            warnings.simplefilter("ignore", FutureWarning)
            d = compute_hausdorff_distance(
                found_hot[:, both].float(), truth_hot[:, both].float(),
                include_background=True, percentile=95,
            )[0].numpy()  # fmt: skip
        out[both.numpy()] = d
    return out


def _mean_hd95(values: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Weighted means over images of per-class HD95 ``(n, K)`` (NaN: left out) and of each
    image's mean over its foreground classes; ``w`` is ``(B, n)`` resample weights."""
    defined = ~np.isnan(values)
    filled = np.where(defined, values, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = (w @ filled) / (w @ defined)
        fg = defined[:, 1:]
        image_mean = np.where(fg.any(1), filled[:, 1:].sum(1) / np.maximum(fg.sum(1), 1), 0)
        has = fg.any(1).astype(np.float64)
        overall = (w @ image_mean) / (w @ has)
    return {"per_class": per_class, "mean": overall}


def segmentation_metrics(
    per_image: np.ndarray,
    classes: list[str],
    groups: list[str] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    unit: str | None = None,
    distances: np.ndarray | None = None,
) -> dict:
    """metrics.json's figures from each image's confusion matrix ``(n, K, K)``: ``miou``,
    ``dice`` (means over the classes present), ``pixel_accuracy``, ``per_class_iou`` and
    ``per_class_dice`` (each ``{value, ci_low, ci_high}``), the pooled ``confusion`` matrix,
    and the counts. ``distances``: each image's per-class HD95 ``(n, K)``, giving ``hd95`` (the
    images' mean over foreground classes, class 0 being background) and ``per_class_hd95``.
    ``resamples`` 0: no intervals; ``unit``: what a group is ("group", "image")."""
    per_image = np.asarray(per_image, dtype=np.float64).reshape(-1, len(classes), len(classes))
    n, k = per_image.shape[0], len(classes)
    total = per_image.sum(0)
    point = scores(total)
    plan = Resampler.build(n, groups, resamples, seed, unit)
    flat = per_image.reshape(n, k * k)
    drawn = plan.collect(lambda w: _flatten(scores((w @ flat).reshape(len(w), k, k))))
    boot = drawn or {}
    figures = {
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
    if distances is not None and n:
        figures.update(_hd95_figures(np.asarray(distances, np.float64), classes, plan))
    return figures


def _hd95_figures(distances: np.ndarray, classes: list[str], plan: Resampler) -> dict:
    """``hd95`` and ``per_class_hd95`` with their intervals (resampled as the other figures)."""
    point = _mean_hd95(distances, np.ones((1, len(distances))))
    boot = plan.collect(lambda w: _mean_hd95(distances, w)) or {}
    return {
        "hd95": interval(float(point["mean"][0]), boot.get("mean")),
        "per_class_hd95": {
            c: interval(float(point["per_class"][0, i]), boot["per_class"][:, i] if boot else None)
            for i, c in enumerate(classes)
        },
    }


def _flatten(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: s[key] for key in ("iou", "dice", "miou", "dice_mean", "pixel_accuracy")}
