"""COCO detection metrics: mAP@[.5:.95], mAP@.5, per-class AP, precision-recall curves, with
bootstrap intervals over images (or groups: patients).

The values come from pycocotools (COCOeval: its matching and its 101-point interpolation).
Each resample reuses COCOeval's per-image matches: a resample is a row of image weights
(``stats/bootstrap.py``), and the weighted AP below equals pycocotools' AP at weights of one
(tested), so no resample runs the matching again.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from ...stats.bootstrap import Resampler, interval

RECALL_POINTS = np.linspace(0.0, 1.00, 101)  # COCOeval's recThrs
IOUS = np.linspace(0.5, 0.95, 10)


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
    """A COCOeval of these images after evaluate() and accumulate() (quiet)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt: dict = {"images": [{"id": i} for i in range(len(truth))], "annotations": []}
    gt["categories"] = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
    for i, t in enumerate(truth):
        for box, label in zip(t.boxes, t.labels, strict=True):
            xywh = _xywh(box)
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i,
                    "category_id": int(label) + 1,
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                }
            )
    dets = [
        {"image_id": i, "category_id": int(label) + 1, "bbox": _xywh(box), "score": float(score)}
        for i, f in enumerate(found)
        for box, score, label in zip(f.boxes, f.scores, f.labels, strict=True)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        result = coco.loadRes(dets) if dets else COCO()
        if not dets:
            result.dataset = {
                "images": gt["images"],
                "annotations": [],
                "categories": gt["categories"],
            }
            result.createIndex()
        ev = COCOeval(coco, result, "bbox")
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
    ev = coco_eval(truth, found, classes)
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K), area all, 100 detections
    n = len(truth)
    matches = [class_matches(ev, k, n) for k in range(len(classes))]
    sampler = Resampler.build(n, groups, resamples, seed)

    def stats(w: np.ndarray) -> dict[str, np.ndarray]:
        ap = np.stack([weighted_ap(m, w) for m in matches], axis=1)  # (b, K, T)
        with np.errstate(invalid="ignore"), _quiet_nan():
            return {
                "map": np.nanmean(ap, axis=(1, 2)),
                "map50": np.nanmean(ap[:, :, 0], axis=1),
                **{f"ap/{k}": np.nanmean(ap[:, k, :], axis=1) for k in range(len(classes))},
            }

    resampled = sampler.collect(stats)
    per_class = {}
    for k, name in enumerate(classes):
        per_class[name] = interval(_mean_defined(precision[:, :, k]), resampled.get(f"ap/{k}"))
    return {
        "map": interval(_mean_defined(precision), resampled.get("map")),
        "map50": interval(_mean_defined(precision[0]), resampled.get("map50")),
        "per_class_ap": per_class,
        "pr_curves": {
            name: [round(float(v), 4) for v in precision[0, :, k]] for k, name in enumerate(classes)
        },
        "recall_points": [round(float(r), 2) for r in RECALL_POINTS],
        "images": n,
        "boxes": int(sum(len(t.boxes) for t in truth)),
        "bootstrap": {"resamples": resamples, "seed": seed, "unit": sampler.unit},
    }


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
