"""The torch-free statistics (xvhpc/stats): bootstrap kernels equal scikit-learn's, group resampling,
bounded weight chunks, calibration error, the operating point and the stored decision rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from tests.conftest import synthetic
from xvhpc.stats import bootstrap as bs
from xvhpc.stats import calibration as cal
from xvhpc.stats.decision import DecisionError, choose_threshold, decide, read_decision

CLASSES = ["a", "b", "c"]


def test_bootstrap_kernels_equal_sklearn_with_the_same_weights() -> None:
    labels, probs = synthetic(300, seed=1)
    pred = probs.argmax(1)
    weights = np.random.default_rng(2).integers(0, 4, size=(6, len(labels))).astype(float)
    m = bs.from_confusion(bs.confusion(weights, labels, pred, 3))
    for i, w in enumerate(weights):
        p, r, f, _ = precision_recall_fscore_support(
            labels, pred, sample_weight=w, labels=[0, 1, 2], zero_division=0
        )
        assert np.allclose(m["precision"][i], p) and np.allclose(m["recall"][i], r)
        assert np.allclose(m["f1"][i], f)
        assert np.isclose(m["accuracy"][i], accuracy_score(labels, pred, sample_weight=w))
        assert np.isclose(
            m["balanced_accuracy"][i], balanced_accuracy_score(labels, pred, sample_weight=w)
        )
        assert np.isclose(
            m["macro_f1"][i], f1_score(labels, pred, sample_weight=w, average="macro")
        )
        for c in range(3):  # rounded scores: many ties
            auc = bs.AucKernel(probs[:, c], labels == c)(w[None])[0]
            assert np.isclose(auc, roc_auc_score(labels == c, probs[:, c], sample_weight=w))


def test_resampler_draws_whole_groups() -> None:
    groups = ["x", "x", "y", "z", "z", "z"]
    r = bs.Resampler.build(6, groups, resamples=50, seed=0)
    for w in r.weights():
        assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 5]).all()
        assert (w.sum(1) > 0).all()


def test_one_group_gives_no_interval_where_two_give_one() -> None:
    """Eight frames of one video (or images of one patient) are one draw: every resample is
    the data itself, so the interval would be zero-wide, a certainty one group cannot give;
    it is not given. Two groups give a real interval."""
    correct = np.array([1, 1, 1, 1, 0, 1, 0, 1], float)

    def accuracy(w: np.ndarray) -> dict[str, np.ndarray]:
        return {"acc": (w * correct).sum(1) / w.sum(1)}

    one = bs.Resampler.build(8, ["clip0.mp4"] * 8, resamples=200, seed=0)
    assert bs.interval(0.75, one.collect(accuracy)["acc"]) == {
        "value": 0.75, "ci_low": None, "ci_high": None}  # fmt: skip
    two = bs.Resampler.build(8, ["clip0.mp4"] * 4 + ["clip1.mp4"] * 4, resamples=200, seed=0)
    got = bs.interval(0.75, two.collect(accuracy)["acc"])
    assert got["ci_low"] == 0.5 and got["ci_high"] == 1.0  # the two videos' own accuracies


def test_bootstrap_weights_come_in_bounded_chunks() -> None:
    """Memory stays bounded for any n: chunks of at most max_elements weights, all resamples."""
    r = bs.Resampler.build(5000, None, resamples=2000, seed=0)
    chunks = list(r.weights(max_elements=1 << 20))
    assert len(chunks) > 1 and all(c.size <= 1 << 20 for c in chunks)
    assert sum(len(c) for c in chunks) == 2000
    assert all((c.sum(axis=1) == 5000).all() for c in chunks)  # n draws per resample
    again = np.concatenate(list(r.weights(max_elements=1 << 22)))
    assert np.array_equal(np.concatenate(chunks), again)  # the memory budget changes nothing


def test_ece_of_a_calibrated_model_is_small() -> None:
    rng = np.random.default_rng(10)
    confidence = rng.uniform(0.5, 1.0, 20000)
    labels = (rng.random(20000) >= confidence).astype(int)  # class 0 with prob = confidence
    probs = np.stack([confidence, 1 - confidence], axis=1)
    assert cal.ece(probs, labels) < 0.02


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 1.0])
def test_operating_point_reaches_the_asked_sensitivity_on_its_data(target: float) -> None:
    labels, probs = synthetic(400, seed=11, signal=1.0)
    positive = labels == 1
    op = choose_threshold(probs[:, 1], positive, min_sensitivity=target)
    decided = probs[:, 1] >= op["threshold"]
    assert decided[positive].mean() >= target and op["sensitivity"] == decided[positive].mean()
    # the best specificity reaching it: any higher threshold misses the target
    kept = np.unique(probs[:, 1][probs[:, 1] >= op["threshold"]])  # score levels decided yes
    if len(kept) > 1:  # dropping the lowest kept level misses the target
        assert (probs[:, 1][positive] >= kept[1]).mean() < target


@pytest.mark.parametrize("target", [0.7, 0.9, 1.0])
def test_operating_point_reaches_the_asked_specificity_on_its_data(target: float) -> None:
    labels, probs = synthetic(400, seed=12, signal=1.0)
    negative = labels != 1
    op = choose_threshold(probs[:, 1], labels == 1, min_specificity=target)
    assert (probs[:, 1][negative] < op["threshold"]).mean() >= target


def test_exact_interval_where_the_bootstrap_collapses() -> None:
    from xvhpc.tasks.classify.metrics import exact_interval

    low, high = exact_interval(9, 9)  # all 9 positives found: the bootstrap says 1.0–1.0
    assert 0.66 < low < 0.67 and high == 1.0
    assert exact_interval(0, 0) is None


def test_decide_applies_temperature_then_threshold() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.1, 0.7], [0.5, 0.45, 0.05]])
    _, label = decide(probs, CLASSES, None)
    assert label.tolist() == [0, 2, 0]
    rule = {"temperature": 1.0, "operating_point": {"positive": "b", "threshold": 0.25}}
    _, label = decide(probs, CLASSES, rule)
    assert label.tolist() == [1, 2, 1]  # b when P(b) ≥ 0.25, else the most probable other
    scaled, label = decide(probs, CLASSES, {"temperature": 2.0, "operating_point": None})
    assert np.allclose(scaled.sum(1), 1) and label.tolist() == [0, 2, 0]
    assert scaled[0, 0] < 0.6  # softer


def test_read_decision_checks_the_file(tmp_path: Path) -> None:
    assert read_decision(tmp_path) is None
    (tmp_path / "decision.json").write_text(
        json.dumps({"temperature": 1.0, "operating_point": {"positive": "zebra", "threshold": 0.5}})
    )
    with pytest.raises(DecisionError, match="zebra"):
        read_decision(tmp_path, CLASSES)
    (tmp_path / "decision.json").write_text("{not json")
    with pytest.raises(DecisionError):
        read_decision(tmp_path, CLASSES)
