"""Calibration: expected calibration error, reliability bins, temperature scaling.

The model's outputs are softmax probabilities; ``log p`` equals the logits up to a per-image
constant, so scaling by a temperature works on stored probabilities as on logits:
``softmax(log p / T) == softmax(logits / T)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BINS = 15
T_RANGE = (0.05, 20.0)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities rescaled by ``temperature`` (1 → unchanged; > 1 softer, < 1 sharper)."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0 or probs.size == 0:
        return probs
    z = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    if len(labels) == 0:
        return float("nan")
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of ``labels`` (bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        return 1.0
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    result = minimize_scalar(
        lambda log_t: nll(apply_temperature(probs, float(np.exp(log_t))), labels),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def bin_index(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Equal-width confidence bins (0, 1/bins], ..., the first one closed at 0."""
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def ece_kernel(
    probs: np.ndarray, labels: np.ndarray, bins: int = BINS
) -> Callable[[np.ndarray], np.ndarray]:
    """A function weights (b, n) → ECE (b,) of the top-class confidence (for the bootstrap)."""
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64) if len(probs) else np.zeros(0)
    onehot = np.zeros((len(confidence), bins))
    onehot[np.arange(len(confidence)), bin_index(confidence, bins)] = 1.0
    gap = onehot * (correct - confidence)[:, None]  # per-bin (accuracy - confidence) sums

    def kernel(w: np.ndarray) -> np.ndarray:
        total = w.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, np.abs(w @ gap).sum(axis=1) / total, np.nan)

    return kernel


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float | None:
    """Expected calibration error: Σ_bins (n_bin / n) · |accuracy_bin − confidence_bin|."""
    if len(labels) == 0:
        return None
    return float(ece_kernel(probs, labels, bins)(np.ones((1, len(labels))))[0])


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per non-empty bin: its range, image count, mean confidence and accuracy (the diagram)."""
    if len(labels) == 0:
        return []
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    index = bin_index(confidence, bins)
    out = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            out.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "count": int(mask.sum()),
                    "confidence": float(confidence[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                }
            )
    return out


def cross_fitted(
    probs: np.ndarray, labels: np.ndarray, group_index: np.ndarray, seed: int = 0, folds: int = 2
) -> tuple[np.ndarray, list[float]]:
    """Probabilities scaled by temperatures each fitted on the *other* folds (split by group).

    An honest ECE after temperature scaling: no image is scaled by a temperature fitted on it.
    Returns the scaled probabilities and the per-fold temperatures."""
    groups = np.unique(group_index)
    rng = np.random.default_rng([seed, 0xCA1])
    fold_of_group = dict(
        zip(rng.permutation(groups).tolist(), np.arange(len(groups)) % folds, strict=True)
    )
    fold = np.array([fold_of_group[g] for g in group_index.tolist()], dtype=np.int64)
    out = np.array(probs, dtype=np.float64, copy=True)
    temps = []
    for f in range(folds):
        held = fold == f
        if not held.any() or held.all():
            temps.append(1.0)
            continue
        t = fit_temperature(probs[~held], labels[~held])
        temps.append(t)
        out[held] = apply_temperature(probs[held], t)
    return out, temps
