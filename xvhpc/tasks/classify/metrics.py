"""A classifier's model details from labels and probabilities: point estimates (scikit-learn)
with bootstrap confidence intervals, calibration and the operating point. Torch-free.

Every figure is ``{value, ci_low, ci_high}``: the value on all images, the 95 % percentile
bootstrap interval over ``resamples`` seeded resamples of the groups (patients) when the data
names them, of the images otherwise. All figures share the same resamples.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ...stats import bootstrap as bs
from ...stats import calibration as cal
from ...stats.decision import choose_threshold

MIN_SUPPORT = 10  # fewer validation images of a class than this: a visible warning
# the headline figures: what a leaderboard ranks by and cross-validation spreads across folds
SPREAD = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")


@dataclass(frozen=True)
class Options:
    resamples: int = 2000
    seed: int = 0
    calibrate: str = "none"  # none | temperature
    positive: str | None = None  # operating point class
    min_sensitivity: float | None = None
    min_specificity: float | None = None


def _point_estimates(
    labels: NDArray[np.int64], pred: NDArray[np.int64], probs: NDArray[np.float64], k: int
) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    classes = list(range(k))
    support = np.bincount(labels, minlength=k)
    present = [c for c in classes if support[c] > 0]
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # "y_pred contains classes not in y_true": dropped, as documented
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, pred, labels=classes, zero_division=0
        )
        out: dict[str, Any] = {
            "confusion_matrix": confusion_matrix(labels, pred, labels=classes),
            "accuracy": accuracy_score(labels, pred),
            "balanced_accuracy": balanced_accuracy_score(labels, pred),
            "macro_f1": f1_score(labels, pred, labels=present, average="macro", zero_division=0),
        }
    out["precision"] = precision
    out["recall"] = np.where(support > 0, recall, np.nan)
    out["f1"] = np.where(support > 0, f1, np.nan)
    out["support"] = support
    out["roc_auc"] = np.array(
        [
            roc_auc_score(labels == c, probs[:, c]) if 0 < support[c] < len(labels) else np.nan
            for c in classes
        ]
    )
    return out


def _macro(values: np.ndarray) -> np.ndarray:
    """Mean over the defined (finite) entries of the last axis; NaN when none is."""
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        return np.where(
            finite.any(-1),
            np.where(finite, values, 0).sum(-1) / np.maximum(finite.sum(-1), 1),
            np.nan,
        )


def _f(x: Any) -> float | None:
    """A finite number as a float, else None (``x``: a scalar, 0-d array or None)."""
    return None if x is None or not np.isfinite(x) else float(x)


@dataclass(frozen=True)
class _Calibrated:
    """The deployed probabilities and what they come from: the temperature, and the
    cross-fitted probabilities the calibrated ECE is measured on (None: not calibrated)."""

    temperature: float
    deployed: np.ndarray
    crossfit: np.ndarray | None
    fold_temperatures: list[float] | None


def _calibrate(
    raw: np.ndarray, labels: np.ndarray, opt: Options, rule: dict | None, group_index: np.ndarray
) -> _Calibrated:
    """Temperature scaling: the rule's temperature (new data), else one fitted on these images
    (``calibrate: temperature``) with a cross-fitted copy, else none."""
    n = len(labels)
    temperature = 1.0
    if rule is not None:
        temperature = float(rule.get("temperature", 1.0))
    elif opt.calibrate == "temperature" and n:
        temperature = cal.fit_temperature(raw, labels)
    deployed = cal.apply_temperature(raw, temperature)
    crossfit, fold_temps = None, None
    if rule is None and opt.calibrate == "temperature" and n:
        crossfit, fold_temps = cal.cross_fitted(raw, labels, group_index, opt.seed)
    elif temperature != 1.0:
        crossfit, fold_temps = deployed, [temperature]  # fitted elsewhere: measured as is
    return _Calibrated(temperature, deployed, crossfit, fold_temps)


def _operating_point(
    deployed: np.ndarray, labels: np.ndarray, classes: list[str], opt: Options, rule: dict | None
) -> dict[str, Any] | None:
    """The operating point: the rule's threshold applied unchanged (new data), else one chosen
    on these images for ``opt.positive``'s minimum sensitivity/specificity, else None."""
    fixed_op = (rule or {}).get("operating_point")
    if not len(labels):
        return None
    if fixed_op:
        p = classes.index(fixed_op["positive"])
        decided_here = deployed[:, p] >= float(fixed_op["threshold"])
        is_pos = labels == p
        return {
            "positive": fixed_op["positive"],
            "threshold": float(fixed_op["threshold"]),
            "min_sensitivity": fixed_op.get("min_sensitivity"),
            "min_specificity": fixed_op.get("min_specificity"),
            "sensitivity": float(decided_here[is_pos].mean()) if is_pos.any() else np.nan,
            "specificity": float((~decided_here[~is_pos]).mean()) if (~is_pos).any() else np.nan,
            "fitted_on": "the model's decision.json (validation split), applied unchanged",
        }
    if rule is not None or opt.positive is None:
        return None
    is_pos = labels == classes.index(opt.positive)
    try:
        return {
            "positive": opt.positive,
            "min_sensitivity": opt.min_sensitivity,
            "min_specificity": opt.min_specificity,
            **choose_threshold(
                deployed[:, classes.index(opt.positive)],
                is_pos,
                opt.min_sensitivity,
                opt.min_specificity,
            ),
        }
    except ValueError as exc:
        return {"positive": opt.positive, "error": str(exc)}


def _resampled(
    resampler: bs.Resampler,
    labels: np.ndarray,
    pred: np.ndarray,
    raw: np.ndarray,
    fit: _Calibrated,
    classes: list[str],
    op: dict[str, Any] | None,
) -> dict[str, np.ndarray]:
    """Every bootstrap statistic, all on the same resamples: the confusion-matrix figures,
    per-class and macro ROC-AUC, ECE (raw and calibrated), the operating point's rates."""
    k = len(classes)
    aucs = [bs.AucKernel(fit.deployed[:, c], labels == c) for c in range(k)]
    ece_raw = cal.ece_kernel(raw, labels)
    ece_cal = cal.ece_kernel(fit.crossfit, labels) if fit.crossfit is not None else None
    decided: NDArray[np.bool_] | None = None
    decided_positive: NDArray[np.bool_] | None = None  # the images of the operating point's class
    if op and "threshold" in op:
        decided = fit.deployed[:, classes.index(op["positive"])] >= op["threshold"]
        decided_positive = labels == classes.index(op["positive"])

    def kernel(w: np.ndarray) -> dict[str, np.ndarray]:
        out = bs.from_confusion(bs.confusion(w, labels, pred, k))
        out["class_auc"] = np.stack([a(w) for a in aucs], axis=1)
        out["roc_auc"] = _macro(out["class_auc"])
        out["ece"] = ece_raw(w)
        if ece_cal is not None:
            out["ece_calibrated"] = ece_cal(w)
        if decided is not None and decided_positive is not None:
            out.update(bs.binary_rates(w, decided_positive, decided))
        return out

    return resampler.collect(kernel) if len(labels) else {}


def _figure(point: dict[str, Any] | None, key: str, boot: dict[str, np.ndarray]) -> dict:
    """One headline figure with its interval (no images: no value)."""
    return bs.interval(_f(point[key]) if point is not None else None, boot.get(key))


def _per_class(
    point: dict[str, Any] | None, boot: dict[str, np.ndarray], classes: list[str]
) -> dict[str, dict[str, Any]]:
    """Support, precision, recall, F1 and ROC-AUC of each class, with intervals."""
    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(classes):
        per_class[name] = {
            "support": int(point["support"][c]) if point is not None else 0,
            **{
                m: bs.interval(
                    _f(point[m][c]) if point is not None else None,
                    boot[m][:, c] if m in boot else None,
                )
                for m in ("precision", "recall", "f1")
            },
            "roc_auc": bs.interval(
                _f(point["roc_auc"][c]) if point is not None else None,
                boot["class_auc"][:, c] if "class_auc" in boot else None,
            ),
        }
    return per_class


def _calibration(
    raw: np.ndarray,
    labels: np.ndarray,
    fit: _Calibrated,
    opt: Options,
    rule: dict | None,
    boot: dict[str, np.ndarray],
) -> dict[str, Any]:
    """metrics.json's ``calibration``: method, temperature, ECE and reliability (raw, and on
    the cross-fitted probabilities when calibrated), NLL."""
    method = (
        (rule or {}).get("calibrate", "temperature" if fit.temperature != 1 else "none")
        if rule is not None
        else opt.calibrate
    )
    out: dict[str, Any] = {
        "method": method,
        "temperature": fit.temperature,
        "bins": cal.BINS,
        "ece": bs.interval(cal.ece(raw, labels), boot.get("ece")),
        "reliability": cal.reliability(raw, labels),
    }
    if fit.crossfit is not None:
        out.update(
            {
                "ece_calibrated": bs.interval(
                    cal.ece(fit.crossfit, labels), boot.get("ece_calibrated")
                ),
                "reliability_calibrated": cal.reliability(fit.crossfit, labels),
                "nll": cal.nll(raw, labels),
                "nll_calibrated": cal.nll(fit.crossfit, labels),
            }
        )
        if rule is None:
            out["cross_fit_temperatures"] = fit.fold_temperatures
    if rule is not None:
        out["fitted_on"] = "the model's decision.json, applied unchanged"
    return out


def _measure_operating_point(
    op: dict[str, Any],
    fit: _Calibrated,
    labels: np.ndarray,
    classes: list[str],
    boot: dict[str, np.ndarray],
    fitting: bool,
    group_index: np.ndarray,
    opt: Options,
) -> None:
    """The operating point's sensitivity and specificity with bootstrap and exact intervals,
    and (fitted here) the cross-fitted estimate of what its threshold does on new data."""
    if "threshold" not in op:
        return
    p = classes.index(op["positive"])
    op["sensitivity"] = bs.interval(op["sensitivity"], boot.get("sensitivity"))
    op["specificity"] = bs.interval(op["specificity"], boot.get("specificity"))
    is_pos = labels == p
    yes = fit.deployed[:, p] >= op["threshold"]
    op["sensitivity"]["exact_ci"] = exact_interval(int(yes[is_pos].sum()), int(is_pos.sum()))
    op["specificity"]["exact_ci"] = exact_interval(int((~yes[~is_pos]).sum()), int((~is_pos).sum()))
    if fitting:
        op["cross_fitted"] = cross_fitted_operating_point(fit.deployed, labels, p, group_index, opt)


def _warnings(
    per_class: dict[str, dict[str, Any]],
    fit: _Calibrated,
    opt: Options,
    fitting: bool,
    op: dict[str, Any] | None,
) -> list[str]:
    """What a reader must know before trusting the figures."""
    out = [
        f"class {name} has only {v['support']} evaluated image(s) (< {MIN_SUPPORT}): "
        "its figures rest on very few cases"
        for name, v in per_class.items()
        if v["support"] < MIN_SUPPORT
    ]
    low, high = cal.T_RANGE
    t = fit.temperature
    if fitting and opt.calibrate == "temperature" and not low * 1.01 < t < high * 0.99:
        out.append(
            f"temperature scaling stopped at its search bound (T = {t:.3g}): these "
            "validation images do not pin a temperature down; treat the calibration as unreliable"
        )
    if op is not None and "error" in op:
        out.append(f"operating point not set: {op['error']}")
    return out


def model_details(
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    groups: list | np.ndarray | None = None,
    options: Options | None = None,
    unit: str | None = None,
    rule: dict | None = None,
) -> dict:
    """Everything metrics.json holds about one model on one labelled set (see module doc).

    ``probs`` are the model's softmax outputs. With ``calibrate: temperature`` the deployed
    probabilities are scaled by a temperature fitted on these images; every figure below is on
    the deployed probabilities, and the calibrated ECE is cross-fitted (each half of the groups
    scaled by a temperature fitted on the other half) so that it is not fitted on itself.

    ``unit``: "group" when ``groups`` are patients, "image" when each is one image's records.
    ``rule``: a decision rule already fitted elsewhere (decision.json): its temperature and
    operating point are applied and measured here, not refitted (new data)."""
    opt = options or Options()
    k = len(classes)
    labels = np.asarray(labels, dtype=np.int64)
    raw = np.asarray(probs, dtype=np.float64).reshape(-1, k)
    n = len(labels)
    resampler = bs.Resampler.build(n, groups, opt.resamples, opt.seed, unit)
    fitting = rule is None
    fit = _calibrate(raw, labels, opt, rule, resampler.group_index)
    pred = fit.deployed.argmax(1) if n else np.zeros(0, dtype=np.int64)
    op = _operating_point(fit.deployed, labels, classes, opt, rule)
    boot = _resampled(resampler, labels, pred, raw, fit, classes, op)
    point = _point_estimates(labels, pred, fit.deployed, k) if n else None  # None iff no image
    per_class = _per_class(point, boot, classes)
    macro_auc = _f(_macro(point["roc_auc"])) if point is not None else None
    details: dict[str, Any] = {
        "samples": n,
        "groups": resampler.n_groups,
        "classes": classes,
        "accuracy": _figure(point, "accuracy", boot),
        "balanced_accuracy": _figure(point, "balanced_accuracy", boot),
        "macro_f1": _figure(point, "macro_f1", boot),
        "roc_auc": bs.interval(macro_auc, boot.get("roc_auc")),
        "per_class": per_class,
        "confusion_matrix": (
            point["confusion_matrix"].tolist() if point is not None else [[0] * k] * k
        ),
        "bootstrap": {
            "resamples": opt.resamples,
            "seed": opt.seed,
            "unit": "patient/group" if resampler.unit == "group" else "image",
            "level": bs.LEVEL,
            "method": "percentile",
        },
        "calibration": _calibration(raw, labels, fit, opt, rule, boot),
        "warnings": _warnings(per_class, fit, opt, fitting, op),
    }
    if op is not None:
        _measure_operating_point(
            op, fit, labels, classes, boot, fitting, resampler.group_index, opt
        )
        details["operating_point"] = op
    return details


def exact_interval(successes: int, trials: int) -> list[float] | None:
    """Clopper–Pearson 95 % interval of a proportion, images taken as independent.

    Beside the bootstrap because a percentile bootstrap collapses at 0 or 1: 9 of 9 positives
    found gives a bootstrap interval of 1.0–1.0, while the exact one is 0.66–1.0."""
    if trials == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(bs.LEVEL, method="exact")
    return [float(ci.low), float(ci.high)]


def cross_fitted_operating_point(
    probs: np.ndarray, labels: np.ndarray, p: int, group_index: np.ndarray, opt: Options
) -> dict | None:
    """The threshold chosen on one half of the groups, measured on the other half (both ways):
    what the asked sensitivity/specificity looks like on images the choice never saw."""
    groups = np.unique(group_index)
    rng = np.random.default_rng([opt.seed, 0x0B])
    half = dict(zip(rng.permutation(groups).tolist(), np.arange(len(groups)) % 2, strict=True))
    fold = np.array([half[g] for g in group_index.tolist()])
    is_pos = labels == p
    decided = np.zeros(len(labels), dtype=bool)
    for f in (0, 1):
        fit, held = fold != f, fold == f
        try:
            t = choose_threshold(
                probs[fit, p], is_pos[fit], opt.min_sensitivity, opt.min_specificity
            )["threshold"]
        except ValueError:
            return None
        decided[held] = probs[held, p] >= t
    if not is_pos.any() or is_pos.all():
        return None
    return {
        "sensitivity": float(decided[is_pos].mean()),
        "specificity": float((~decided[~is_pos]).mean()),
        "note": "threshold chosen on one half of the groups, measured on the other, both ways",
    }
