"""Segmentation cross-validation through the real pipeline (``xvhpc run``: ingest with folds,
a model per fold, evaluate --all pooling the folds' masks, report): every original image is
scored once, by the fold that held it out."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest

from tests.conftest import tiny_spec, xv
from xvhpc.registry import load_task

FOLDS = 2


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("segment-cv")
    args = argparse.Namespace(out=str(work / "data"), seed=1, task="segment", per_class=10, size=32)
    assert load_task("segment").synth(args) == 0
    spec = tiny_spec(
        work / "spec.yaml",
        work / "data",
        name="segment-cv",
        task="segment",
        data={"image_size": 32, "split": {"folds": FOLDS}},
        model={"arch": "unet_tiny", "pretrained": "none"},
        train={"max_iterations": 20, "val_every": 20, "learning_rate": 0.003,
               "optimizer": "adamw", "class_weights": "auto"},
    )  # fmt: skip
    xv("run", str(spec), "--out", str(work / "run"), cwd=work, env={"OMP_NUM_THREADS": "1"})
    return work / "run"


def test_folds_pool_into_one_score_of_every_image(cv_run: Path) -> None:
    pooled = json.loads((cv_run / "eval" / "cv-0" / "metrics.json").read_text())
    folds = [
        json.loads((cv_run / "eval" / str(p) / "metrics.json").read_text()) for p in range(FOLDS)
    ]
    assert pooled["task"] == "segment" and pooled["folds"] == list(range(FOLDS))
    assert pooled["images"] == sum(f["images"] for f in folds)  # each image in one fold
    assert pooled["coverage"]["scored_more_than_once"] == []
    # the pooled matrix is the folds' matrices summed: nothing lost or counted twice
    summed = [[sum(f["confusion"][i][j] for f in folds) for j in range(3)] for i in range(3)]
    assert pooled["confusion"] == summed
    spread = pooled["fold_spread"]["miou"]
    assert spread["per_fold"] == [f["miou"]["value"] for f in folds]
    assert pooled["miou"]["ci_low"] <= pooled["miou"]["value"] <= pooled["miou"]["ci_high"]
    with (cv_run / "eval" / "cv-0" / "predictions.csv").open(newline="") as fh:
        paths = [r["path"] for r in csv.DictReader(fh)]
    assert len(paths) == len(set(paths)) == pooled["images"]


def test_report_shows_the_pooled_figures(cv_run: Path) -> None:
    page = (cv_run / "report.html").read_text()
    assert f"Cross-validation: {FOLDS} group folds" in page
    assert "Pooled out-of-fold figures" in page and "hd95" in page
