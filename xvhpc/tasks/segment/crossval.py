"""Segmentation's cross-validation at evaluate time: pool each sweep point's out-of-fold masks.

Every original image is held out in exactly one fold, so the folds' per-image confusion
matrices and HD95 values together score every image once, each by a model that never saw it
(or its patient). The pooled figures (intervals over images or groups) rank the sweep points;
the spread across folds shows how much one split's figure could have said. The deployed model
is the final fit on all folds (``train.final_fit``), else fold 0's model."""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING

import numpy as np

from ...evaluation import (
    check_coverage,
    coverage,
    crossval_intro,
    deployed_text,
    evaluated_groups,
    fold_spread,
    pooling,
    show,
    spread_table,
)  # fmt: skip
from ...rundir import PREDICTIONS_STEM, Layout
from ...spec.points import CV_KEYS, cv_points
from ...util import read_json, write_json_atomic, write_text_atomic
from .info import INFO
from .maskap import mask_ap
from .metrics import segmentation_metrics

if TYPE_CHECKING:
    from ...rundir.run import RunDir

SPREAD = ("miou", "dice", "pixel_accuracy", "hd95")  # the figures shown per fold


def _spread(metrics: dict) -> tuple[str, ...]:
    """The figures shown per fold: a Mask R-CNN's mask AP too."""
    return SPREAD + (("mask_map", "mask_map50") if "mask_map" in metrics else ())


def merge_found(found: dict[int, dict], members: list[int]) -> dict:
    """The folds' per-image figures as one set (``per_image``, ``distances``, paths, groups,
    and a Mask R-CNN's true and found objects, renumbered: each fold counts its images from 0)."""
    objects = [pair for p in members for pair in found[p].get("objects", [])]
    return {
        "per_image": np.concatenate([found[p]["per_image"] for p in members]),
        "distances": np.concatenate([found[p]["distances"] for p in members]),
        "paths": [path for p in members for path in found[p]["paths"]],
        "groups": [g for p in members for g in found[p]["groups"]],
        "objects": [
            ([{**a, "image_id": i} for a in truth], [{**a, "image_id": i} for a in made])
            for i, (truth, made) in enumerate(objects)
        ],
    }


def pool(
    run: RunDir, results: dict[int, dict], found: dict[int, dict], log: logging.Logger
) -> dict[int, dict]:
    """Pooled metrics per sweep point, keyed by its deployed training point; each written to
    ``pooled/<c>/metrics.json`` with its per-image ``predictions.csv``."""
    from .evaluate import per_image_csv

    pooled: dict[int, dict] = {}
    layout = Layout(run.root)
    for c, group in evaluated_groups(run, found, log):
        members = group.folds
        merged = merge_found(found, members)
        check_coverage(run, c, coverage(merged["paths"]))
        first = results[members[0]]
        ev = run.point(members[0]).evaluate
        metrics = segmentation_metrics(
            merged["per_image"], first["classes"], merged["groups"], ev.bootstrap, ev.seed,
            first["unit"], merged["distances"],
        )  # fmt: skip
        if merged["objects"]:  # a Mask R-CNN: mask AP over every fold's held-out objects
            truth, made = zip(*merged["objects"], strict=True)
            metrics.update(
                mask_ap(list(truth), list(made), first["classes"], merged["groups"],
                        ev.bootstrap, ev.seed, first["unit"])
            )  # fmt: skip
        metrics.update(
            {
                "task": INFO.name,
                "point": members[0],
                "params": {k: v for k, v in first["params"].items() if k not in CV_KEYS},
                "classes": first["classes"],
                "unit": first["unit"],
                "folds": members,
                "fold_spread": fold_spread(results, members, _spread(first)),
                "coverage": coverage(merged["paths"]),
                "data": "out-of-fold predictions",
                "deployed": deployed_text(group),
                "samples": [],
            }
        )
        out = layout.pooled_dir(c)
        write_text_atomic(
            out / (PREDICTIONS_STEM + INFO.predictions_suffix),
            per_image_csv(
                merged["paths"], merged["groups"], merged["per_image"], merged["distances"]
            ),
        )
        write_json_atomic(layout.pooled_metrics(c), metrics)
        pooled[group.deployed] = metrics
        log.info(
            "sweep point %d: pooled mIoU %s over %d folds (%d images)",
            c, show(metrics["miou"]), len(members), metrics["images"],
        )  # fmt: skip
    return pooled


def crossval_section(run: RunDir, manifest: dict) -> str:
    """The report's cross-validation part: per sweep point, the pooled figures with their
    spread across folds, and which model is deployed."""
    if not pooling(run.spec):
        return ""
    parts = crossval_intro(run, manifest)
    for c, _ in enumerate(cv_points(run.plan["points"])):
        metrics = read_json(Layout(run.root).pooled_metrics(c))
        if metrics:
            parts.append(spread_table(metrics, tuple(metrics["fold_spread"])))
            parts.append(f"<p class='note'>Deployed model: {html.escape(metrics['deployed'])}.</p>")
    return "\n".join(parts)
