"""From window scores to segments, and their scores (numpy only): runs of windows joined into
segments, temporal non-maximum suppression, per-class AP at temporal IoU thresholds and their
mean, with bootstrap intervals over videos (``stats/bootstrap.py``'s resampling plan)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...stats.bootstrap import Resampler, interval
from .info import IOU_THRESHOLDS

NMS_IOU = 0.5  # a detection overlapping a better one of its class this much is dropped
MAX_RESAMPLES = (
    1000  # AP is no weighted sum: each resample is scored in a loop, so at most this many
)
Detection = tuple[float, float, int, float]  # start, end, class, confidence


def tiou(a: Sequence[float], b: Sequence[float]) -> float:
    """Temporal IoU of two (start, end) intervals."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def segments_from_windows(spans: np.ndarray, probs: np.ndarray) -> list[Detection]:
    """Segments of one video from its sliding windows (``spans`` W×2 seconds in time order,
    ``probs`` W×K): every maximal run of windows whose most probable class is c ≥ 1 becomes
    one segment of c (its mean probability of c the confidence), then temporal NMS."""
    found: list[Detection] = []
    best = probs.argmax(1) if len(probs) else np.zeros(0, int)
    run_start = 0
    for w in range(1, len(best) + 1):
        if w == len(best) or best[w] != best[run_start]:
            c = int(best[run_start])
            if c > 0:
                score = float(probs[run_start:w, c].mean())
                found.append((float(spans[run_start, 0]), float(spans[w - 1, 1]), c, score))
            run_start = w
    return nms(found)


def nms(found: list[Detection], threshold: float = NMS_IOU) -> list[Detection]:
    """Temporal non-maximum suppression per class, best first."""
    kept: list[Detection] = []
    for det in sorted(found, key=lambda d: -d[3]):
        if all(k[2] != det[2] or tiou(k, det) <= threshold for k in kept):
            kept.append(det)
    return kept


def average_precision(
    dets: list[list[Detection]], truth: list[list[tuple]], cls: int, threshold: float,
    counts: np.ndarray | None = None,
) -> float:  # fmt: skip
    """AP of class ``cls`` over videos (each video's detections and true (start, end, class)
    segments; ``counts``: how often each video is drawn, for a bootstrap resample): greedy
    matching at ``threshold`` tIoU, best detections first, all-point interpolated precision.
    NaN when no video has a true segment of the class."""
    counts = np.ones(len(dets), int) if counts is None else counts.astype(int)
    scored: list[tuple[float, int]] = []
    positives = 0
    for v, (found, true) in enumerate(zip(dets, truth, strict=True)):
        if counts[v] == 0:
            continue
        gts = [t for t in true if int(t[2]) == cls]
        positives += len(gts) * counts[v]
        used = [False] * len(gts)
        for det in sorted((d for d in found if d[2] == cls), key=lambda d: -d[3]):
            ious = [tiou(det, g) if not used[i] else -1.0 for i, g in enumerate(gts)]
            hit = int(np.argmax(ious)) if ious and max(ious) >= threshold else -1
            if hit >= 0:
                used[hit] = True
            scored += [(det[3], int(hit >= 0))] * counts[v]
    if positives == 0:
        return float("nan")
    if not scored:
        return 0.0
    order = sorted(scored, key=lambda s: -s[0])
    tp = np.cumsum([s[1] for s in order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / positives
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # interpolated
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float((precision * steps).sum())


def _figures(dets, truth, classes: list[str], counts=None) -> dict[str, np.ndarray]:
    """Per class × threshold AP (K-1 × len(IOU_THRESHOLDS)), the mAP at each and their mean."""
    ap = np.array(
        [[average_precision(dets, truth, c, t, counts) for t in IOU_THRESHOLDS]
         for c in range(1, len(classes))]
    )  # fmt: skip
    with np.errstate(all="ignore"):
        at = np.nanmean(ap, 0) if np.isfinite(ap).any() else np.full(len(IOU_THRESHOLDS), np.nan)
    return {
        "ap": ap,
        "at": at,
        "mean": np.array(np.nanmean(at) if np.isfinite(at).any() else np.nan),
    }


def action_metrics(
    dets: list[list[Detection]], truth: list[list[tuple]], classes: list[str],
    resamples: int = 1000, seed: int = 0,
) -> dict:  # fmt: skip
    """metrics.json's figures: ``tmap`` (the mean of the mAPs at tIoU 0.3/0.5/0.7), ``tmap30``,
    ``tmap50``, ``tmap70`` and ``per_class_ap`` (class → threshold → figure), each ``{value,
    ci_low, ci_high}`` with a 95 % bootstrap over videos."""
    point = _figures(dets, truth, classes)
    plan = Resampler.build(len(dets), None, min(resamples, MAX_RESAMPLES), seed, "video")
    boots: dict[str, list] = {"ap": [], "at": [], "mean": []}
    for chunk in plan.weights():
        for w in chunk:
            drawn = _figures(dets, truth, classes, np.rint(w).astype(int))
            for key in boots:
                boots[key].append(drawn[key])
    one_video = len(dets) < 2  # no interval from one video (as ``Resampler.collect``)
    boot = (
        None
        if one_video or not boots["mean"]
        else {k: np.asarray(v, dtype=float) for k, v in boots.items()}
    )
    names = [f"tmap{round(t * 100)}" for t in IOU_THRESHOLDS]
    out = {
        "tmap": interval(float(point["mean"]), boot["mean"] if boot else None),
        **{n: interval(float(point["at"][i]), boot["at"][:, i] if boot else None)
           for i, n in enumerate(names)},
        "per_class_ap": {
            c: {n: interval(float(point["ap"][k, i]), boot["ap"][:, k, i] if boot else None)
                for i, n in enumerate(names)}
            for k, c in enumerate(classes[1:])
        },
        "videos": len(dets),
        "segments": int(sum(len(t) for t in truth)),
        "detections": int(sum(len(d) for d in dets)),
        "bootstrap": {"resamples": plan.resamples if dets else 0, "unit": "video"},
    }  # fmt: skip
    return out
