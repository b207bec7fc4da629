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
import statistics
from typing import TYPE_CHECKING, Any

import numpy as np

from ...evaluation import EvaluateError
from ...report.html import value
from ...rundir import PREDICTIONS, Layout
from ...spec.points import CV_KEYS, CvPoint, cv_points
from ...stats.decision import describe, write_decision
from ...util import read_json, write_json_atomic, write_text_atomic
from .evaluate import decision_rule, predictions_csv, selection
from .info import INFO
from .metrics import SPREAD, Options, model_details

if TYPE_CHECKING:
    from ...rundir.run import RunDir


def deployed_text(group: CvPoint) -> str:
    """How the model published for this sweep point was trained (the report says it)."""
    if group.final is None:
        return f"fold 0's model (training point {group.folds[0]}); not refitted on all data"
    return (
        f"the final fit (training point {group.final}) on every fold's training records; it "
        "has no held-out data, so the figures shown are the pooled out-of-fold ones"
    )


def fold_spread(results: dict[int, dict], members: list[int]) -> dict[str, Any]:
    """Each figure per fold, with the mean and standard deviation across folds."""
    out: dict[str, Any] = {}
    for key in SPREAD:
        values = [value(results[p][key]) for p in members]
        known = [v for v in values if v is not None]
        out[key] = {
            "per_fold": values,
            "mean": statistics.fmean(known) if known else None,
            "sd": statistics.stdev(known) if len(known) > 1 else None,
        }
    return out


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


def coverage(merged: dict[str, Any]) -> dict[str, Any]:
    """How many records were scored, and any scored more than once (must be none)."""
    seen: dict[str, int] = {}
    for path in merged["paths"]:
        seen[path] = seen.get(path, 0) + 1
    twice = sorted(p for p, n in seen.items() if n > 1)
    return {"records": len(merged["paths"]), "scored_more_than_once": twice[:100]}


def check_coverage(run: RunDir, config: int, seen: dict[str, Any]) -> None:
    """Every original image scored exactly once: one scored twice (two folds holding it) or
    missing (fewer pooled predictions than manifest.json's originals) is an error, not a
    quietly different figure."""
    if seen["scored_more_than_once"]:
        raise EvaluateError(
            f"sweep point {config}: {len(seen['scored_more_than_once'])} record(s) scored by "
            f"more than one fold, e.g. {seen['scored_more_than_once'][0]}: the folds overlap"
        )
    manifest = read_json(Layout(run.root).manifest) or {}
    counts = manifest.get("counts_before_augmentation") or {}
    originals = sum(n for per_class in counts.values() for n in per_class.values())
    if seen["records"] != originals:
        raise EvaluateError(
            f"sweep point {config}: {seen['records']} out-of-fold predictions for the "
            f"{originals} original images of {Layout(run.root).manifest}: records are missing "
            "from the folds (shards written with other split settings?): ingest again"
        )


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
    for c, group in enumerate(cv_points(run.plan["points"])):
        members = group.folds
        missing = [p for p in members if p not in found]
        if missing:
            log.error("sweep point %d: folds %s not evaluated; no pooled figures", c, missing)
            continue
        merged = merge_found(found, members)
        check_coverage(run, c, coverage(merged))
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
                "fold_spread": fold_spread(results, members),
                "coverage": coverage(merged),
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
