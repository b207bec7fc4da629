"""The classifier's model details (xvhpc/tasks/classify/metrics.py): point estimates equal
scikit-learn's, bootstrap intervals (image and patient level), small-class warnings, temperature
scaling, and the operating point with its intervals."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
)

from tests.conftest import synthetic
from xvhpc.stats import calibration as cal
from xvhpc.tasks.classify.metrics import Options, model_details

CLASSES = ["a", "b", "c"]


def width(entry: dict) -> float:
    return entry["ci_high"] - entry["ci_low"]


def test_point_estimates_are_sklearn() -> None:
    labels, probs = synthetic(200, seed=3)
    d = model_details(labels, probs, CLASSES, options=Options(resamples=1000))
    pred = probs.argmax(1)
    assert np.isclose(d["accuracy"]["value"], accuracy_score(labels, pred))
    assert np.isclose(d["balanced_accuracy"]["value"], balanced_accuracy_score(labels, pred))
    assert np.isclose(d["macro_f1"]["value"], f1_score(labels, pred, average="macro"))
    aucs = [roc_auc_score(labels == c, probs[:, c]) for c in range(3)]
    assert np.isclose(d["roc_auc"]["value"], np.mean(aucs))
    assert np.isclose(d["per_class"]["b"]["roc_auc"]["value"], aucs[1])
    assert (
        d["confusion_matrix"] == np.bincount(labels * 3 + pred, minlength=9).reshape(3, 3).tolist()
    )


def every_interval(d: dict):
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc"):
        yield key, d[key]
    for name, per in d["per_class"].items():
        for key in ("precision", "recall", "f1", "roc_auc"):
            yield f"{name}.{key}", per[key]
    yield "ece", d["calibration"]["ece"]


def test_intervals_contain_the_point_estimate_and_shrink_with_more_data() -> None:
    small = model_details(*synthetic(80, seed=4, round_to=None), CLASSES)
    large = model_details(*synthetic(2000, seed=4, round_to=None), CLASSES)
    for d in (small, large):
        assert d["bootstrap"]["resamples"] >= 1000
        for key, e in every_interval(d):
            assert e["ci_low"] <= e["value"] <= e["ci_high"], (key, e)
    for (key, s), (_, big) in zip(every_interval(small), every_interval(large), strict=True):
        assert width(big) < width(s), key
    assert width(large["accuracy"]) < 0.5 * width(small["accuracy"])


def test_bootstrap_is_seeded() -> None:
    labels, probs = synthetic(150, seed=5)
    one = model_details(labels, probs, CLASSES, options=Options(seed=7))
    two = model_details(labels, probs, CLASSES, options=Options(seed=7))
    other = model_details(labels, probs, CLASSES, options=Options(seed=8))
    assert one["roc_auc"] == two["roc_auc"] and one["roc_auc"] != other["roc_auc"]


def test_group_bootstrap_differs_from_image_bootstrap_on_grouped_data() -> None:
    """20 patients × 10 images; whether the model is right depends on the patient. Resampling
    images treats 200 correlated images as independent: its interval is too narrow."""
    rng = np.random.default_rng(6)
    patients = np.repeat(np.arange(20), 10)
    labels = np.repeat(rng.integers(0, 3, 20), 10)
    right = np.repeat(rng.random(20) < 0.6, 10)
    pred = np.where(right, labels, (labels + 1) % 3)
    probs = np.full((200, 3), 0.1)
    probs[np.arange(200), pred] = 0.8
    by_image = model_details(labels, probs, CLASSES)
    by_patient = model_details(labels, probs, CLASSES, groups=[f"p{g}" for g in patients])
    assert by_image["bootstrap"]["unit"] == "image" and by_image["groups"] == 200
    assert by_patient["bootstrap"]["unit"] == "patient/group" and by_patient["groups"] == 20
    assert by_image["accuracy"]["value"] == by_patient["accuracy"]["value"]
    assert width(by_patient["accuracy"]) > 2 * width(by_image["accuracy"])


def test_small_classes_get_a_warning() -> None:
    labels, probs = synthetic(60, seed=7)
    labels[labels == 2] = 0
    labels[:4] = 2
    d = model_details(labels, probs, CLASSES)
    assert d["per_class"]["c"]["support"] == 4
    assert any("class c has only 4" in w for w in d["warnings"])
    assert not any("class a" in w for w in d["warnings"])


def test_temperature_scaling_recovers_an_overconfident_model() -> None:
    labels, probs = synthetic(3000, seed=9, signal=1.0, round_to=None)
    sharp = cal.apply_temperature(probs, 0.4)  # the same model, overconfident
    t = cal.fit_temperature(sharp, labels)
    assert 2.0 < t < 3.0  # undoes the 0.4
    assert cal.ece(cal.apply_temperature(sharp, t), labels) < 0.5 * cal.ece(sharp, labels)
    d = model_details(labels, sharp, CLASSES, options=Options(calibrate="temperature"))
    c = d["calibration"]
    assert c["method"] == "temperature" and np.isclose(c["temperature"], t)
    assert c["ece_calibrated"]["value"] < 0.5 * c["ece"]["value"]  # cross-fitted, still better
    assert len(c["cross_fit_temperatures"]) == 2
    assert sum(b["count"] for b in c["reliability"]) == 3000
    assert not any("temperature" in w for w in d["warnings"])


def test_temperature_at_its_search_bound_is_flagged() -> None:
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.6, 0.4], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])  # all right: T → 0
    d = model_details(labels, probs, ["a", "b"], options=Options(calibrate="temperature"))
    assert d["calibration"]["temperature"] < 0.06
    assert any("search bound" in w for w in d["warnings"])


def test_operating_point_in_model_details_with_intervals() -> None:
    labels, probs = synthetic(300, seed=13, signal=1.0)
    groups = [f"p{i // 3}" for i in range(300)]
    options = Options(positive="b", min_sensitivity=0.95)
    d = model_details(labels, probs, CLASSES, groups, options)
    op = d["operating_point"]
    assert op["positive"] == "b" and op["sensitivity"]["value"] >= 0.95
    assert op["sensitivity"]["ci_low"] <= op["sensitivity"]["value"] <= op["sensitivity"]["ci_high"]
    assert op["specificity"]["ci_low"] <= op["specificity"]["value"] <= op["specificity"]["ci_high"]
    assert 0 <= op["cross_fitted"]["sensitivity"] <= 1
    low, high = op["specificity"]["exact_ci"]
    assert low <= op["specificity"]["value"] <= high
