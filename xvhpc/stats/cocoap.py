"""COCO average precision with bootstrap intervals over images (or groups: patients), for any
``iouType`` pycocotools scores: ``bbox`` (detect's boxes) or ``segm`` (segment's instance masks).

The values come from pycocotools (COCOeval: its matching and its 101-point interpolation).
Each resample reuses COCOeval's per-image matches: a resample is a row of image weights
(``stats/bootstrap.py``), and the weighted AP below equals pycocotools' AP at weights of one
(tested), so no resample runs the matching again. Task-neutral: tasks never import each other.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bootstrap import Resampler, interval

RECALL_POINTS = np.linspace(0.0, 1.00, 101)  # COCOeval's recThrs
IOUS = np.linspace(0.5, 0.95, 10)


def run_cocoeval(
    n_images: int, classes: list[str], truth: list[dict], found: list[dict], iou_type: str,
    sizes: list[tuple[int, int]] | None = None,
) -> Any:  # fmt: skip
    """A quiet COCOeval after evaluate() and accumulate() of images ``0..n_images-1``.

    ``truth``: annotations ``{image_id, category_id, bbox | segmentation, area, iscrowd}``
    (ids added here); ``found``: results ``{image_id, category_id, bbox | segmentation,
    score}``; category ``k + 1`` is class ``k``; ``sizes``: each image's (height, width), which
    ``segm`` needs."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt: dict = {
        "images": [
            {"id": i, **({"height": sizes[i][0], "width": sizes[i][1]} if sizes else {})}
            for i in range(n_images)
        ],
        "annotations": [{**a, "id": n + 1} for n, a in enumerate(truth)],
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        result = coco.loadRes([dict(a) for a in found]) if found else COCO()  # it writes
        if not found:
            result.dataset = {"images": gt["images"], "annotations": [],
                              "categories": gt["categories"]}  # fmt: skip
            result.createIndex()
        ev = COCOeval(coco, result, iou_type)
        ev.evaluate()
        ev.accumulate()
    return ev


@dataclass
class ClassMatches:
    """One class's detections over all images, in COCOeval's order (score, stable)."""

    image: np.ndarray  # (d,) image of each detection
    tp: np.ndarray  # (T, d) matched, not ignored
    fp: np.ndarray  # (T, d) unmatched, not ignored
    positives: np.ndarray  # (n_images,) boxes of this class per image (not ignored)


def class_matches(ev, k: int, n_images: int) -> ClassMatches:
    """Class ``k``'s matches from ``ev.evalImgs`` (area all, at most 100 detections per image)."""
    max_det = ev.params.maxDets[-1]
    n_area = len(ev.params.areaRng)
    images, scores, matched, ignored = [], [], [], []
    positives = np.zeros(n_images)
    for i in range(n_images):
        e = ev.evalImgs[k * n_area * n_images + i]  # evalImgs: category, then area, then image
        if e is None:
            continue
        positives[i] = np.count_nonzero(e["gtIgnore"] == 0)
        d = len(e["dtScores"][:max_det])
        images.append(np.full(d, i))
        scores.append(np.asarray(e["dtScores"][:max_det]))
        matched.append(e["dtMatches"][:, :max_det])
        ignored.append(e["dtIgnore"][:, :max_det])
    if not images:
        empty = np.zeros((len(IOUS), 0), bool)
        return ClassMatches(np.zeros(0, np.int64), empty, empty, positives)
    order = np.argsort(-np.concatenate(scores), kind="mergesort")
    dtm = np.concatenate(matched, axis=1)[:, order] > 0
    dti = np.concatenate(ignored, axis=1)[:, order].astype(bool)
    return ClassMatches(np.concatenate(images)[order], dtm & ~dti, ~dtm & ~dti, positives)


def weighted_ap(m: ClassMatches, weights: np.ndarray) -> np.ndarray:
    """AP per resample and IoU threshold, ``(b, T)``, with images weighted by ``weights``
    ``(b, n_images)``: COCOeval's interpolated precision at 101 recall points, averaged.
    NaN where a resample holds no box of the class. One ``searchsorted`` for all rows: row
    ``r``'s recalls (≤ 1) are shifted by ``2 r`` so the flattened array stays sorted."""
    b, d = weights.shape[0], len(m.image)
    npos = weights @ m.positives
    out = np.full((b, len(IOUS)), np.nan)
    defined = npos > 0
    if not defined.any():
        return out
    if d == 0:
        out[defined] = 0.0
        return out
    w = weights[defined][:, m.image]  # (b', d)
    rows = np.arange(len(w))[:, None]
    for t in range(len(IOUS)):
        tp = np.cumsum(w * m.tp[t], axis=1)
        fp = np.cumsum(w * m.fp[t], axis=1)
        recall = tp / npos[defined][:, None]
        precision = tp / (tp + fp + np.spacing(1))
        precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        at = np.searchsorted((recall + 2 * rows).ravel(), (RECALL_POINTS + 2 * rows).ravel())
        at = at.reshape(len(w), -1) - rows * d  # first index with recall ≥ the point, per row
        q = np.where(at < d, precision[rows, np.minimum(at, d - 1)], 0.0)
        out[defined, t] = q.mean(axis=1)
    return out


def ap_figures(
    ev: Any, n: int, classes: list[str], groups: list | None = None, resamples: int = 2000,
    seed: int = 0, unit: str | None = None,
) -> tuple[dict, np.ndarray, Resampler]:  # fmt: skip
    """``map`` (AP@[.5:.95]), ``map50`` and ``per_class_ap`` as ``{value, ci_low, ci_high}``
    from a finished COCOeval of ``n`` images; with COCOeval's precision ``(T, R, K)`` (area all,
    100 detections) and the resampler used."""
    precision = ev.eval["precision"][:, :, :, 0, -1]
    matches = [class_matches(ev, k, n) for k in range(len(classes))]
    sampler = Resampler.build(n, groups, resamples, seed, unit)

    def stats(w: np.ndarray) -> dict[str, np.ndarray]:
        ap = np.stack([weighted_ap(m, w) for m in matches], axis=1)  # (b, K, T)
        with np.errstate(invalid="ignore"), _quiet_nan():
            return {
                "map": np.nanmean(ap, axis=(1, 2)),
                "map50": np.nanmean(ap[:, :, 0], axis=1),
                **{f"ap/{k}": np.nanmean(ap[:, k, :], axis=1) for k in range(len(classes))},
            }

    resampled = sampler.collect(stats)
    per_class = {
        name: interval(_mean_defined(precision[:, :, k]), resampled.get(f"ap/{k}"))
        for k, name in enumerate(classes)
    }
    figures = {
        "map": interval(_mean_defined(precision), resampled.get("map")),
        "map50": interval(_mean_defined(precision[0]), resampled.get("map50")),
        "per_class_ap": per_class,
    }
    return figures, precision, sampler


def _mean_defined(precision: np.ndarray) -> float | None:
    """COCOeval's summary: the mean over entries that are defined (-1: a class without boxes)."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else None


@contextlib.contextmanager
def _quiet_nan():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without boxes: NaN
        yield
