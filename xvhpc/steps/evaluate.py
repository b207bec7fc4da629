"""``xvhpc evaluate``: model details on the validation split (or any labelled folder/CSV);
leaderboard; the decision rule (temperature, operating point) written beside the model.

Per point it writes ``eval/<point>/predictions.csv`` (one row per evaluated image) and
``metrics.json`` (every figure as ``{value, ci_low, ci_high}``, see steps/metrics.py), and, on
the validation split, ``decision.json`` into the point's model directory (copied with it when
the point is published; serve and export apply it).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..data.catalog import CatalogError, build_catalog
from ..data.dataset import Index, ShardDataset, to_model_input
from ..data.decode import BadImage
from ..data.roles import role_index
from ..models.bundle import Bundle, load_bundle, publish_model
from ..rundir import Layout
from ..spec.points import is_final_fit
from ..spec.schema import SplitSpec
from ..stats import provenance
from ..stats.decision import DECISION_FILE, decide, describe, read_decision, write_decision
from ..sweeps.board import annotate_leaderboard, pruned
from ..util import read_json, write_json_atomic, write_text_atomic
from . import crossval
from .common import RunDir, setup_logging
from .ingest import catalog_of
from .metrics import Options, model_details, value

PREDICTIONS = "predictions.csv"
RANKED = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")
_PART = re.compile(r"(#frame\d+)?(#tile\d+)?$")


class EvaluateError(Exception):
    """The evaluation cannot be done as asked (exit 2)."""


def image_of(source: str) -> str:
    """The file a shard record came from (``rel#frame2#tile0`` → ``rel``)."""
    return _PART.sub("", source, count=1)


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
    sources = _sources(index)
    k = len(bundle.classes)
    return {
        "labels": np.array(labels, dtype=np.int64),
        "probs": np.concatenate(probs) if probs else np.zeros((0, k)),
        "paths": sources,
        "shard": [Path(index.files[s]).name for s in index.shard.tolist()],
        "row": index.row.tolist(),
    }


def _sources(index: Index) -> list[str]:
    import h5py

    out: list[str] = [""] * len(index)
    for s, file in enumerate(index.files):
        positions = np.flatnonzero(index.shard == s)
        if not len(positions):
            continue
        with h5py.File(file, "r") as h5:
            column = h5["source"]
            for pos in positions.tolist():
                raw = column[int(index.row[pos])]
                out[pos] = raw.decode() if isinstance(raw, bytes) else str(raw)
    return out


def split_groups(run: RunDir, paths: list[str], log: logging.Logger) -> tuple[list[str], str]:
    """The group (patient) of each validation record, from the data source's catalog.

    Without a group column each original image (with its frames/tiles) is its own group."""
    groups_of: dict[str, str | None] = {}
    try:
        catalog = catalog_of(run.plan["data_source"], run.spec)
        groups_of = {s.rel: s.group for s in catalog.samples}
    except (CatalogError, OSError, KeyError) as exc:
        log.warning("groups unknown (%s): resampling images, not patients", exc)
    named = any(g is not None for g in groups_of.values())
    groups = []
    for path in paths:
        rel = image_of(path)
        group = groups_of.get(rel)
        groups.append(group if group is not None else f"image:{rel}")
    return groups, ("group" if named else "image")


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


def _options(run: RunDir, classes: list[str]) -> Options:
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
    if not (bundle_dir / "meta.json").exists():
        log.error("point %d has no trained model at %s", point, bundle_dir)
        return None
    bundle = load_bundle(bundle_dir)
    classes = bundle.classes
    options = _options(run, classes)
    skipped: list[dict] = []
    fixed = None
    if data:
        found, skipped, unit = predict_files(bundle, data, run, log)
        stem = Path(data).stem
        name, csv_name = f"metrics-{stem}.json", f"predictions-{stem}.csv"
        fixed = read_decision(bundle_dir, classes)  # new data: the model's own rule, not refitted
    else:
        split = run.point(point).data.split
        found = predict_split(bundle, run.root, split)
        found["groups"], unit = split_groups(run, found["paths"], log)
        name, csv_name = "metrics.json", PREDICTIONS
        if keep is not None:
            keep[point] = found
    metrics = model_details(
        found["labels"], found["probs"], classes, found["groups"], options, unit, fixed
    )
    prov = provenance.collect(run.plan, run.point(point), layout.train_dir(point))
    metrics.update(
        {
            "point": point,
            "params": run.plan["points"][point],
            "data": data or "validation split",
            "selection": None if data else crossval.selection(run.point(point)),
            "skipped": skipped,
            "predictions": csv_name,
            "provenance": prov,
        }
    )
    metrics["training"] = read_json(layout.progress(point), {})
    rule = fixed
    if not data:
        rule = decision_rule(metrics, classes, prov, point)
        if crossval.pooling(run.spec):  # one fold's rule, kept apart: the pooled one publishes
            rule["fitted_on"]["data"] = f"held-out fold {run.point(point).data.split.fold}"
        write_decision(layout.eval_dir(point) if crossval.pooling(run.spec) else bundle_dir, rule)
    metrics["decision_rule"] = describe(rule)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    out = layout.eval_dir(point)
    write_text_atomic(out / csv_name, predictions_csv(found, classes, rule))
    write_json_atomic(out / name, metrics)
    log.info(
        "point %d: accuracy %s, balanced accuracy %s on %d images (%d %s)",
        point,
        _show(metrics["accuracy"]),
        _show(metrics["balanced_accuracy"]),
        metrics["samples"],
        metrics["groups"],
        "patients/groups" if unit == "group" else "images",
    )
    for warning in metrics["warnings"]:
        log.warning("point %d: %s", point, warning)
    return metrics


def _show(entry: dict) -> str:
    if entry.get("value") is None:
        return "n/a"
    if entry.get("ci_low") is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [95% CI {entry['ci_low']:.3f}–{entry['ci_high']:.3f}]"


def failed_points(run: RunDir, points: list[int], results: dict[int, dict]) -> list[dict]:
    """The points evaluate could not score, each with why (from its progress record): a sweep
    whose point failed still ranks the others (issue 22 N10)."""
    layout = Layout(run.root)
    failed = []
    for p in points:
        if p in results:
            continue
        progress = read_json(layout.progress(p), {}) or {}
        if not progress:
            cause = "training never started (see the train job's log)"
        elif progress.get("state") in UNFINISHED:
            cause = (
                f"training did not finish ({progress['state']} at iteration "
                f"{progress.get('iteration', '?')} of {progress.get('max_iterations', '?')}): "
                "not ranked (see logs/train-*)"
            )
        else:
            cause = (
                f"training ended {progress.get('state', 'unfinished')} at iteration "
                f"{progress.get('iteration', '?')} with no model (see logs/train-*)"
            )
        failed.append({"point": p, "params": run.plan["points"][p], "cause": cause})
    return failed


def leaderboard(
    run: RunDir, results: dict[int, dict], failed: list[dict] | None = None
) -> list[dict]:
    """Sweep points ranked by evaluate.rank_by (best first); the best one becomes RUN_DIR/model.

    Rows hold plain point estimates (what `xvhpc status` prints) and their intervals in ``ci``."""
    key = run.spec.evaluate.rank_by
    rows = [
        {
            "point": p,
            "params": m["params"],
            **{k: value(m[k]) for k in RANKED},
            "ci": {
                k: [m[k].get("ci_low"), m[k].get("ci_high")]
                for k in RANKED
                if isinstance(m[k], dict)
            },
        }
        for p, m in results.items()
    ]
    annotate_leaderboard(run.root, run.spec, rows)  # state; a study slot's trial and params
    if crossval.pooling(run.spec):  # one row per sweep point, not one per fold
        rows = [r for r in rows if r["point"] in results]
    rows.sort(key=lambda r: (-(r[key] if r[key] is not None else -1), r["point"]))
    write_json_atomic(
        Layout(run.root).leaderboard, {"rank_by": key, "rows": rows, "failed": failed or []}
    )
    if rows and rows[0][key] is not None:  # a row without figures (unscored) is never published
        publish_model(run, rows[0]["point"])
    return rows


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def sync_published_decision(run: RunDir, points: list[int], log: logging.Logger) -> None:
    """Give RUN_DIR/model the decision rule of the point it was published from (by weights)."""
    layout = Layout(run.root)
    published = _digest(layout.model / "weights.pt")
    if published is None:
        return
    for p in points:
        src = layout.point_model(p)
        if _digest(src / "weights.pt") == published and (src / DECISION_FILE).exists():
            tmp = layout.model / (DECISION_FILE + ".copy")
            shutil.copyfile(src / DECISION_FILE, tmp)
            tmp.replace(layout.model / DECISION_FILE)
            log.info("published model: decision rule of point %d", p)
            return


def pooled_or_points(
    run: RunDir, results: dict[int, dict], found: dict[int, dict], args, log
) -> dict[int, dict]:
    """What the leaderboard ranks: pooled out-of-fold figures when cross-validating (all
    points on their own held-out folds; one point alone pools nothing)."""
    if not results or args.data or not args.all or not crossval.pooling(run.spec):
        return results
    options = _options(run, next(iter(results.values()))["classes"])
    return crossval.pool(run, results, found, options, log)


# a point's training that ended in one of these did not finish: its bundle (written at each
# better validation) is a half-trained model, never ranked or published (issue 22 N10)
UNFINISHED = ("running", "checkpointed")


def unfinished(run: RunDir, point: int) -> str | None:
    """The progress state of a point whose training did not finish, else None."""
    state = (read_json(Layout(run.root).progress(point), {}) or {}).get("state")
    return state if state in UNFINISHED else None


def candidates(run: RunDir) -> list[int]:
    """What evaluate --all scores: every point but the pruned, the unfinished and the final
    fits (no held-out data scores a final fit; its sweep point's pooled out-of-fold figures
    stand for it). The unfinished are listed as failed by ``failed_points``."""
    every = range(len(run.plan["points"]))
    return [
        p
        for p in every
        if not pruned(run.root, p)
        and not is_final_fit(run.plan["points"], p)
        and not unfinished(run, p)
    ]


def main(args: argparse.Namespace) -> int:
    log = setup_logging()
    run = RunDir.open(args.run_dir)
    points = candidates(run) if args.all else [args.point]
    if run.spec.task == "detect":
        from ..tasks.detect.evaluate import main as evaluate_detection

        if args.data:
            print("xvhpc: error: evaluate --data is for classification only", file=sys.stderr)
            return 2
        return evaluate_detection(run, points, args.all, log)
    found: dict[int, dict] = {}
    try:
        results = {
            p: m for p in points if (m := evaluate_point(run, p, args.data, log, found)) is not None
        }
        ranked = pooled_or_points(run, results, found, args, log)
    except (CatalogError, EvaluateError) as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
    if not results:
        print("xvhpc: error: no trained model to evaluate", file=sys.stderr)
        return 1
    everyone = [p for p in range(len(run.plan["points"])) if unfinished(run, p)] if args.all else []
    failed = failed_points(run, sorted({*points, *everyone}), results)
    for f in failed:
        log.warning("point %d not scored: %s", f["point"], f["cause"])
    if args.all and not args.data:
        rows = leaderboard(run, ranked, failed)
        for r in rows:
            log.info(
                "leaderboard: point %d %s %s=%.3f",
                r["point"],
                r["params"],
                run.spec.evaluate.rank_by,
                r[run.spec.evaluate.rank_by] or 0,
            )
    if not args.data and (args.all or not crossval.pooling(run.spec)):
        sync_published_decision(run, [*results, *ranked], log)
    # --all: the points that finished are ranked, the failed ones listed; the report goes on
    return 0 if args.all or not failed else 1
