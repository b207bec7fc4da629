"""Vectorised bootstrap: every resample is a row of sample weights, all metrics at once.

A resample draws ``G`` groups with replacement from the ``G`` groups of the data (a group is a
patient when the data names one, else one image with all its frames/tiles); an image's weight
in that resample is how often its group was drawn. Every statistic below is a weighted sum, so
``B`` resamples are a ``B × n`` weight matrix times a few ``n``-long columns: no Python loop
over resamples. Chunks of resamples bound the memory (``max_elements`` weights at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Resampler:
    """The resampling plan: which group each sample belongs to, how many resamples, the seed."""

    group_index: np.ndarray  # (n,) int: the group of each sample, 0..n_groups-1
    n_groups: int
    resamples: int
    seed: int
    unit: str  # "group" (patients) or "image"

    @classmethod
    def build(
        cls,
        n: int,
        groups: np.ndarray | list | None = None,
        resamples: int = 2000,
        seed: int = 0,
        unit: str | None = None,
    ) -> Resampler:
        """``groups``: one hashable per sample (None → every sample its own group)."""
        if groups is None:
            index = np.arange(n, dtype=np.int64)
            return cls(index, n, resamples, seed, unit or "image")
        labels = np.asarray([str(g) for g in groups], dtype=object)
        if len(labels) != n:
            raise ValueError(f"{len(labels)} groups for {n} samples")
        _, index = np.unique(labels, return_inverse=True)
        index = index.astype(np.int64).reshape(-1)
        return cls(index, int(index.max()) + 1 if n else 0, resamples, seed, unit or "group")

    @property
    def n(self) -> int:
        return len(self.group_index)

    def weights(self, max_elements: int = 1 << 22) -> Iterator[np.ndarray]:
        """Chunks of ``(b, n)`` float64 weights; the same resamples on every call (seeded)."""
        if self.n == 0 or self.resamples == 0:
            return
        rng = np.random.default_rng([self.seed, 0x5EED])
        per_chunk = max(1, min(self.resamples, max_elements // max(self.n, self.n_groups, 1)))
        done = 0
        g = self.n_groups
        while done < self.resamples:
            b = min(per_chunk, self.resamples - done)
            draws = rng.integers(0, g, size=(b, g))
            offsets = (np.arange(b, dtype=np.int64) * g)[:, None]
            counts = np.bincount((draws + offsets).ravel(), minlength=b * g).reshape(b, g)
            if self.unit == "image" and self.n_groups == self.n:  # identity: no gather
                yield counts.astype(np.float64)
            else:
                yield counts[:, self.group_index].astype(np.float64)
            done += b

    def collect(self, fn: Callable[[np.ndarray], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Apply ``fn`` (weights → dict of arrays with a leading resample axis) to every chunk."""
        parts: dict[str, list[np.ndarray]] = {}
        for w in self.weights():
            for key, value in fn(w).items():
                parts.setdefault(key, []).append(np.asarray(value, dtype=np.float64))
        out = {key: np.concatenate(chunks, axis=0) for key, chunks in parts.items()}
        if self.n_groups < 2:  # every resample is the data itself: a zero-width interval would
            for value in out.values():  # claim a certainty one patient (or video) cannot give
                value[...] = np.nan
        return out


def interval(
    value: float | None, resampled: np.ndarray | None, level: float = LEVEL
) -> dict[str, float | None]:
    """``{value, ci_low, ci_high}``: the point estimate and the percentile bootstrap interval.

    Resamples where the statistic is undefined (NaN: e.g. a class drawn with no image) are left
    out; with fewer than half of them defined the interval is not given (None)."""
    out: dict[str, float | None] = {
        "value": None if value is None or not np.isfinite(value) else float(value),
        "ci_low": None,
        "ci_high": None,
    }
    if resampled is None or out["value"] is None:
        return out
    finite = resampled[np.isfinite(resampled)]
    if len(finite) == 0 or len(finite) < 0.5 * len(resampled):
        return out
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    out["ci_low"], out["ci_high"] = float(low), float(high)
    return out


# ----- kernels: weights (b, n) → statistics (b, ...) -------------------------------------------


def _safe_div(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), empty)


def confusion(w: np.ndarray, labels: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Weighted confusion matrices ``(b, k, k)`` (rows true, columns predicted)."""
    cell = labels.astype(np.int64) * k + pred.astype(np.int64)
    onehot = np.zeros((len(cell), k * k))
    onehot[np.arange(len(cell)), cell] = 1.0
    return (w @ onehot).reshape(len(w), k, k)


def from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, macro F1 and per-class precision/recall/F1 from ``(b, k, k)``.

    Conventions (the same as the point estimates): precision is 0 when a class is never
    predicted (scikit-learn's ``zero_division=0``); recall and F1 are undefined (NaN) for a class
    with no true image; balanced accuracy and macro F1 average over the classes with images."""
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    total = cm.sum(axis=(1, 2))
    present = support > 0
    precision = _safe_div(tp, predicted, 0.0)
    recall = _safe_div(tp, support, np.nan)
    f1 = np.where(present, _safe_div(2 * tp, support + predicted, 0.0), np.nan)
    n_present = present.sum(axis=1)
    with np.errstate(invalid="ignore"):
        balanced = np.where(
            n_present > 0, np.nansum(recall, axis=1) / np.maximum(n_present, 1), np.nan
        )
        macro_f1 = np.where(n_present > 0, np.nansum(f1, axis=1) / np.maximum(n_present, 1), np.nan)
    return {
        "accuracy": _safe_div(np.trace(cm, axis1=1, axis2=2), total, np.nan),
        "balanced_accuracy": balanced,
        "macro_f1": macro_f1,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


class AucKernel:
    """Weighted one-vs-rest ROC-AUC of one score column, ties counted half (Mann–Whitney).

    AUC = Σ_pos w_i · (negative weight below s_i + ½ negative weight tied with s_i) / (W⁺ W⁻):
    the negatives' weights are summed cumulatively in score order once per resample, and each
    positive reads its two positions in that running sum (found once, by binary search)."""

    def __init__(self, scores: np.ndarray, positive: np.ndarray):
        positive = np.asarray(positive, dtype=bool)
        neg = np.flatnonzero(~positive)
        neg = neg[np.argsort(scores[neg], kind="mergesort")]
        neg_scores = scores[neg]
        self.neg = neg
        self.pos = np.flatnonzero(positive)
        self.lo = np.searchsorted(neg_scores, scores[self.pos], side="left")
        self.hi = np.searchsorted(neg_scores, scores[self.pos], side="right")

    def __call__(self, w: np.ndarray) -> np.ndarray:
        if len(self.pos) == 0 or len(self.neg) == 0:
            return np.full(len(w), np.nan)
        running = np.zeros((len(w), len(self.neg) + 1))
        np.cumsum(w[:, self.neg], axis=1, out=running[:, 1:])
        wp = w[:, self.pos]
        num = (wp * (running[:, self.lo] + running[:, self.hi])).sum(axis=1) * 0.5
        den = wp.sum(axis=1) * running[:, -1]
        return _safe_div(num, den, np.nan)


def binary_rates(w: np.ndarray, positive: np.ndarray, decided: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity and specificity of a yes/no decision against the positive class."""
    pos = positive.astype(np.float64)
    dec = decided.astype(np.float64)
    return {
        "sensitivity": _safe_div(w @ (pos * dec), w @ pos, np.nan),
        "specificity": _safe_div(w @ ((1 - pos) * (1 - dec)), w @ (1 - pos), np.nan),
    }
