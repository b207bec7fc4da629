"""``xvhpc evaluate`` for classifiers: each point's model on its validation split (or any
labelled folder/CSV) → model details with intervals, and on the validation split the decision
rule (temperature, operating point) written beside the model.

Per point it writes ``eval/<point>/predictions.csv`` (one row per evaluated image) and
``metrics.json`` (every figure as ``{value, ci_low, ci_high}``, see metrics.py), and, on the
validation split, ``decision.json`` into the point's model directory (copied with it when the
point is published; serve and export apply it).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...data.catalog import CatalogError, build_catalog
from ...data.dataset import ShardDataset, to_model_input
from ...data.decode import BadImage
from ...data.roles import role_index
from ...evaluation import EvaluateError, pooling, show, sources, split_groups
from ...models.bundle import Bundle, load_bundle
from ...rundir import METRICS, PREDICTIONS, Layout
from ...spec import ExperimentSpec
from ...spec.points import is_final_fit
from ...spec.schema import SplitSpec
from ...stats import provenance
from ...stats.decision import decide, describe, read_decision, write_decision
from ...util import read_json, write_json_atomic, write_text_atomic
from .info import INFO
from .metrics import Options, model_details

if TYPE_CHECKING:
    from ...rundir.run import RunDir


@torch.no_grad()
def predict_split(bundle: Bundle, run_root: Path, split: SplitSpec, batch_size: int = 64) -> dict:
    """Probabilities for every record that scores this point (the validation split, or its
    held-out fold), with its source path, shard and row."""
    index = role_index(run_root, split, "score")
    dataset = ShardDataset(index)
    labels: list[int] = []
    probs: list[np.ndarray] = []  # one (batch, classes) array per batch
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = to_model_input(torch.stack([it[0] for it in items]), bundle.device)
        probs.append(bundle.probabilities(x))
        labels.extend(it[1] for it in items)
    paths = sources(index)
    k = len(bundle.classes)
    return {
        "labels": np.array(labels, dtype=np.int64),
        "probs": np.concatenate(probs) if probs else np.zeros((0, k)),
        "paths": paths,
        "shard": [Path(index.files[s]).name for s in index.shard.tolist()],
        "row": index.row.tolist(),
    }


def predict_files(
    bundle: Bundle, source: str, run: RunDir, log: logging.Logger
) -> tuple[dict, list[dict], str]:
    """Decode a labelled folder/CSV exactly as ingest does and predict every image."""
    data = run.spec.data.model_copy(
        update={"augment": {}, "split": run.spec.data.split.model_copy(update={"validation": 0.5})}
    )
    catalog = build_catalog(source, data)
    unknown = sorted(set(catalog.classes) - set(bundle.classes))
    if unknown:
        raise CatalogError(
            f"classes {unknown} are not classes of the model ({', '.join(bundle.classes)})"
        )
    labels, probs, paths, groups, skipped = [], [], [], [], list(catalog.skipped)
    for sample in catalog.samples:
        try:
            x = bundle.inputs(sample.path, sample.rel)
        except BadImage as exc:
            skipped.append({"path": sample.rel, "reason": str(exc)})
            continue
        probs.append(bundle.probabilities(x).mean(0))
        labels.append(bundle.classes.index(sample.label))
        paths.append(sample.rel)
        groups.append(sample.group if sample.group is not None else f"image:{sample.rel}")
    for s in skipped:
        log.warning("skipped %s: %s", s["path"], s["reason"])
    unit = "group" if any(s.group is not None for s in catalog.samples) else "image"
    found = {
        "labels": np.array(labels, dtype=np.int64),
        "probs": np.array(probs).reshape(-1, len(bundle.classes)),
        "paths": paths,
        "groups": groups,
        "shard": [""] * len(paths),
        "row": [""] * len(paths),
    }
    return found, skipped, unit


def predictions_csv(found: dict, classes: list[str], rule: dict | None) -> str:
    """One row per image: path, group, true label, each class's probability (after the
    decision rule's temperature), predicted label (most probable), correct, and with an
    operating point the rule's decision."""
    probs, label = decide(found["probs"], classes, rule)
    if not len(found["labels"]):
        probs = np.zeros((0, len(classes)))
    pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
    has_rule = bool(rule and rule.get("operating_point"))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["path", "group", "true", *(f"p_{c}" for c in classes), "predicted", "correct"]
    if has_rule:
        header += ["decision", "decision_correct"]
    folds = found.get("fold")  # pooled out-of-fold predictions: the fold that scored each
    writer.writerow([*header, "shard", "row", *(["fold"] if folds is not None else [])])
    for i, y in enumerate(found["labels"].tolist()):
        row = [
            found["paths"][i],
            found["groups"][i],
            classes[y],
            *(f"{p:.6f}" for p in probs[i]),
            classes[pred[i]],
            int(pred[i] == y),
        ]
        if has_rule:
            row += [classes[label[i]], int(label[i] == y)]
        tail = [folds[i]] if folds is not None else []
        writer.writerow([*row, found["shard"][i], found["row"][i], *tail])
    return buf.getvalue()


def evaluate_options(run: RunDir, classes: list[str]) -> Options:
    """The bootstrap, calibration and operating-point settings; the positive class must be one
    of the model's."""
    ev = run.spec.evaluate
    op = ev.operating_point
    if op is not None and op.positive not in classes:
        raise EvaluateError(
            f"evaluate.operating_point.positive {op.positive!r} is not a class of the model "
            f"(classes: {', '.join(classes)})"
        )
    return Options(
        resamples=ev.bootstrap,
        seed=ev.seed,
        calibrate=ev.calibrate,
        positive=op.positive if op else None,
        min_sensitivity=op.min_sensitivity if op else None,
        min_specificity=op.min_specificity if op else None,
    )


def decision_rule(details: dict, classes: list[str], prov: dict, point: int) -> dict:
    """What serve and export apply: the fitted temperature and the operating point."""
    op = details.get("operating_point")
    rule = {
        "classes": classes,
        "calibrate": details["calibration"]["method"],
        "temperature": details["calibration"]["temperature"],
        "operating_point": None,
        "fitted_on": {
            "data": "validation split",
            "point": point,
            "images": details["samples"],
            "groups": details["groups"],
        },
        "provenance": prov,
    }
    if op and "threshold" in op:
        rule["operating_point"] = {
            "positive": op["positive"],
            "threshold": op["threshold"],
            "min_sensitivity": op["min_sensitivity"],
            "min_specificity": op["min_specificity"],
            "sensitivity": op["sensitivity"],
            "specificity": op["specificity"],
        }
    return rule


def selection(spec: ExperimentSpec) -> dict[str, Any]:
    """Which data chose the checkpoint and which scored it (the report says both)."""
    split = spec.data.split
    if split.fold is None:
        scored = "the validation split"
        chose = "the select split (training groups kept apart)" if split.select else scored
    else:
        scored = f"held-out fold {split.fold}"
        chose = (
            f"the select groups of the other folds (never fold {split.fold})"
            if split.select
            else scored
        )
    return {"chose": chose, "scored": scored, "optimistic": chose == scored}


def scored(
    bundle: Bundle, run: RunDir, point: int, data: str | None, log: logging.Logger
) -> tuple[dict, list[dict], str]:
    """Predictions on the labelled ``data``, else on the point's held-out split, with the files
    skipped and the bootstrap unit ("group" when the data names patients/groups)."""
    if data:
        return predict_files(bundle, data, run, log)
    found = predict_split(bundle, run.root, run.point(point).data.split)
    found["groups"], unit = split_groups(run, found["paths"], log)
    return found, [], unit


def output_names(data: str | None) -> tuple[str, str]:
    """(metrics, predictions) file names: the split's, or ``-<stem>`` ones for ``--data``."""
    if not data:
        return METRICS, PREDICTIONS
    stem = Path(data).stem
    return f"metrics-{stem}.json", f"predictions-{stem}.csv"


def evaluate_point(
    run: RunDir, point: int, data: str | None, log: logging.Logger, keep: dict | None = None
) -> dict | None:
    """One point's model details; its predictions go into ``keep`` (for pooling folds)."""
    started = time.perf_counter()  # "seconds" in metrics.json: status and report show it
    layout = Layout(run.root)
    bundle_dir = layout.point_model(point)
    if not data and is_final_fit(run.plan["points"], point):
        raise EvaluateError(
            f"point {point} is a final fit on all folds (train.final_fit): no held-out data "
            "scores it; evaluate --all reports its sweep point's pooled out-of-fold figures, or "
            "pass --data with labelled images it never saw"
        )
    if not layout.bundle(point).exists():
        log.error("point %d has no trained model at %s", point, bundle_dir)
        return None
    bundle = load_bundle(bundle_dir)
    classes = bundle.classes
    options = evaluate_options(run, classes)
    found, skipped, unit = scored(bundle, run, point, data, log)
    name, csv_name = output_names(data)
    # new data: the model's own rule, not refitted
    fixed = read_decision(bundle_dir, classes) if data else None
    if not data and keep is not None:
        keep[point] = found
    metrics = model_details(
        found["labels"], found["probs"], classes, found["groups"], options, unit, fixed
    )
    prov = provenance.collect(run.plan, run.point(point), layout.train_dir(point))
    metrics.update(
        {
            "task": INFO.name,
            "point": point,
            "params": run.plan["points"][point],
            "data": data or "validation split",
            "selection": None if data else selection(run.point(point)),
            "skipped": skipped,
            "predictions": csv_name,
            "provenance": prov,
        }
    )
    metrics["training"] = read_json(layout.progress(point), {})
    rule = fixed
    if not data:
        rule = decision_rule(metrics, classes, prov, point)
        if pooling(run.spec):  # one fold's rule, kept apart: the pooled one publishes
            rule["fitted_on"]["data"] = f"held-out fold {run.point(point).data.split.fold}"
        write_decision(layout.eval_dir(point) if pooling(run.spec) else bundle_dir, rule)
    metrics["decision_rule"] = describe(rule)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    out = layout.eval_dir(point)
    write_text_atomic(out / csv_name, predictions_csv(found, classes, rule))
    write_json_atomic(out / name, metrics)
    log.info(
        "point %d: accuracy %s, balanced accuracy %s on %d images (%d %s)",
        point,
        show(metrics["accuracy"]),
        show(metrics["balanced_accuracy"]),
        metrics["samples"],
        metrics["groups"],
        "patients/groups" if unit == "group" else "images",
    )
    for warning in metrics["warnings"]:
        log.warning("point %d: %s", point, warning)
    return metrics
