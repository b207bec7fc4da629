"""The decision rule a model ships with: temperature and operating point (``decision.json``).

``xvhpc evaluate`` fits it on the validation split and writes it into the model directory
beside ``meta.json``; serve and export read it with :func:`read_decision` and apply it with
:func:`decide`. Torch-free on purpose.

Rule: probabilities are first scaled by the temperature (1 = unchanged). With an operating
point on class P at threshold t, an image is labelled P when its probability of P is ≥ t,
otherwise the most probable of the other classes; without one, the most probable class.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..rundir import BundleFiles
from ..util import write_json_atomic
from .calibration import apply_temperature

VERSION = 1


class DecisionError(ValueError):
    """A decision.json that does not fit its model."""


def choose_threshold(
    scores: np.ndarray,
    positive: np.ndarray,
    min_sensitivity: float | None = None,
    min_specificity: float | None = None,
) -> dict[str, float]:
    """The threshold on ``scores`` (decide positive when score ≥ threshold) that reaches
    ``min_sensitivity`` with the best specificity, or ``min_specificity`` with the best
    sensitivity, on these data. The threshold sits halfway between the last score it keeps
    and the next lower one, so the decisions on these data are the same and tiny numerical
    differences on re-scoring do not flip them."""
    from sklearn.metrics import roc_curve

    if (min_sensitivity is None) == (min_specificity is None):
        raise ValueError("give min_sensitivity or min_specificity")
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        raise ValueError("an operating point needs images of the positive class and of others")
    fpr, tpr, thresholds = roc_curve(positive, scores, drop_intermediate=False)
    specificity = 1.0 - fpr
    if min_sensitivity is not None:
        i = int(np.argmax(tpr >= min_sensitivity - 1e-12))  # tpr rises as the threshold falls
    else:
        assert min_specificity is not None  # exactly one of the two is given (checked above)
        i = int(np.flatnonzero(specificity >= min_specificity - 1e-12).max())
    top = float(np.max(scores))
    if not np.isfinite(thresholds[i]):  # nothing positive
        threshold = (top + 1.0) / 2 if top < 1.0 else math.nextafter(1.0, 2.0)
    elif i + 1 < len(thresholds):
        threshold = (float(thresholds[i]) + float(thresholds[i + 1])) / 2
    else:
        threshold = float(thresholds[i]) / 2  # every image positive: halfway to 0
    decided = scores >= threshold
    return {
        "threshold": float(threshold),
        "sensitivity": float(decided[positive].mean()),
        "specificity": float((~decided[~positive]).mean()),
    }


def decide(
    probs: np.ndarray, classes: list[str], rule: dict | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities after the temperature, label index per image)`` under ``rule``."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if not rule:
        return probs, probs.argmax(axis=1)
    probs = apply_temperature(probs, float(rule.get("temperature", 1.0)))
    op = rule.get("operating_point")
    if not op:
        return probs, probs.argmax(axis=1)
    p = classes.index(op["positive"])
    others = probs.copy()
    others[:, p] = -np.inf
    label = np.where(probs[:, p] >= float(op["threshold"]), p, others.argmax(axis=1))
    return probs, label


def describe(rule: dict | None) -> str:
    """One line for people: what the rule does."""
    if not rule:
        return "most probable class"
    parts = []
    if float(rule.get("temperature", 1.0)) != 1.0:
        parts.append(f"temperature {float(rule['temperature']):.3f}")
    op = rule.get("operating_point")
    if op:
        parts.append(
            f"{op['positive']} when P({op['positive']}) ≥ {float(op['threshold']):.4f}, "
            "else the most probable other class"
        )
    else:
        parts.append("most probable class")
    return "; ".join(parts)


def write_decision(model_dir: str | Path, rule: dict) -> Path:
    """Write ``rule`` as ``model_dir/decision.json`` (atomically)."""
    path = BundleFiles(Path(model_dir)).decision
    write_json_atomic(path, {"version": VERSION, **rule})
    return path


def read_decision(model_dir: str | Path, classes: list[str] | None = None) -> dict | None:
    """The decision rule stored with a model, or None when it has none (most probable class).

    Raises DecisionError when the file is unreadable or does not fit ``classes``."""
    path = BundleFiles(Path(model_dir)).decision
    try:
        rule = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DecisionError(f"{path}: unreadable decision rule: {exc}") from None
    if not isinstance(rule, dict):
        raise DecisionError(f"{path}: not a JSON object")
    temperature = rule.get("temperature", 1.0)
    if not isinstance(temperature, int | float) or not temperature > 0:
        raise DecisionError(f"{path}: temperature must be a positive number")
    op = rule.get("operating_point")
    if op is not None:
        if not isinstance(op, dict) or not {"positive", "threshold"} <= set(op):
            raise DecisionError(f"{path}: operating_point needs positive and threshold")
        if classes is not None and op["positive"] not in classes:
            raise DecisionError(
                f"{path}: operating point class {op['positive']!r} is not a class of the model "
                f"({', '.join(classes)})"
            )
    if classes is not None and rule.get("classes") not in (None, classes):
        raise DecisionError(f"{path}: written for classes {rule['classes']}, model has {classes}")
    return rule
