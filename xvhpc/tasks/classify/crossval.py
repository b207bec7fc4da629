"""A classifier's cross-validation at evaluate time: pool each sweep point's out-of-fold
predictions (the report's part is ``report.crossval_section``).

Every original image is held out in exactly one fold, so the folds' predictions together
score every image once, each by a model that never saw it or its patient. The pooled figures
(with patient-level bootstrap intervals) rank the sweep points; the spread across folds shows
how much one split's figure could have said. The deployed model is the best point's final fit
on all folds (``train.final_fit``), else its fold 0 model: the pooled figures estimate the
training procedure, of which either model is one draw (the final fit has no held-out data).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ...evaluation import check_coverage, coverage, deployed_text, evaluated_groups, fold_spread
from ...report.html import value
from ...rundir import PREDICTIONS, Layout
from ...spec.points import CV_KEYS
from ...stats.decision import describe, write_decision
from ...util import write_json_atomic, write_text_atomic
from .evaluate import decision_rule, predictions_csv, selection
from .info import INFO
from .metrics import SPREAD, Options, model_details

if TYPE_CHECKING:
    from ...rundir.run import RunDir


def merge_found(found: dict[int, dict], members: list[int]) -> dict[str, Any]:
    """The folds' predictions as one set, each row tagged with its fold."""
    merged: dict[str, Any] = {"labels": [], "probs": [], "fold": []}
    for k, p in enumerate(members):
        merged["labels"].append(found[p]["labels"])
        merged["probs"].append(found[p]["probs"])
        merged["fold"] += [k] * len(found[p]["labels"])
        for key in ("paths", "groups", "shard", "row"):
            merged.setdefault(key, []).extend(found[p][key])
    merged["labels"] = np.concatenate(merged["labels"])
    merged["probs"] = np.concatenate(merged["probs"])
    return merged


def pool(
    run: RunDir,
    results: dict[int, dict],
    found: dict[int, dict],
    options: Options,
    log: logging.Logger,
) -> dict[int, dict]:
    """Pooled metrics per sweep point, keyed by its deployed training point (the final fit,
    else fold 0), whose bundle gets the decision rule fitted on the pooled predictions."""
    pooled: dict[int, dict] = {}
    for c, group in evaluated_groups(run, found, log):
        members = group.folds
        merged = merge_found(found, members)
        check_coverage(run, c, coverage(merged["paths"]))
        first = results[members[0]]
        classes = first["classes"]
        metrics = model_details(
            merged["labels"],
            merged["probs"],
            classes,
            merged["groups"],
            options,
            "image" if first["bootstrap"].get("unit", "image") == "image" else "group",
        )
        params = {k: v for k, v in first["params"].items() if k not in CV_KEYS}
        spec = run.point(members[0])
        metrics.update(
            {
                "task": INFO.name,
                "point": members[0],
                "params": params,
                "folds": members,
                "fold_spread": fold_spread(results, members, SPREAD),
                "coverage": coverage(merged["paths"]),
                "data": "out-of-fold predictions",
                "selection": {
                    **selection(spec),
                    "scored": f"out-of-fold predictions of all {len(members)} folds",
                },
                "deployed": deployed_text(group),
                "predictions": PREDICTIONS,
                "provenance": first.get("provenance", {}),
            }
        )
        rule = decision_rule(metrics, classes, metrics["provenance"], members[0])
        rule["fitted_on"]["data"] = "out-of-fold predictions"
        for p in {members[0], group.deployed}:
            if Layout(run.root).point_model(p).is_dir():
                write_decision(Layout(run.root).point_model(p), rule)
        metrics["decision_rule"] = describe(rule)
        out = Layout(run.root).pooled_dir(c)
        write_text_atomic(out / PREDICTIONS, predictions_csv(merged, classes, rule))
        write_json_atomic(Layout(run.root).pooled_metrics(c), metrics)
        pooled[group.deployed] = metrics
        log.info(
            "sweep point %d: pooled accuracy %.3f over %d folds (%d images)",
            c,
            value(metrics["accuracy"]) or 0.0,
            len(members),
            metrics["samples"],
        )
    return pooled
