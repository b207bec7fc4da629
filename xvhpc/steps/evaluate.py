"""``xvhpc evaluate``: metrics on the validation split (or any labelled folder/CSV); leaderboard."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ..data.catalog import CatalogError, build_catalog
from ..data.dataset import ShardDataset, load_index, to_model_input
from ..data.decode import BadImage
from ..models.bundle import Bundle, load_bundle, publish_model
from ..util import read_json, write_json_atomic
from .common import RunDir, setup_logging
from .metrics import classification_metrics


@torch.no_grad()
def predict_split(
    bundle: Bundle, run_root: Path, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    dataset = ShardDataset(load_index(run_root, "val"))
    labels, probs = [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = to_model_input(torch.stack([it[0] for it in items]), bundle.device)
        probs.append(bundle.probabilities(x))
        labels.extend(it[1] for it in items)
    k = len(bundle.classes)
    return np.array(labels, dtype=np.int64), (np.concatenate(probs) if probs else np.zeros((0, k)))


def predict_files(
    bundle: Bundle, source: str, run: RunDir, log
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
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
    labels, probs, skipped = [], [], list(catalog.skipped)
    for sample in catalog.samples:
        try:
            x = bundle.inputs(sample.path, sample.rel)
        except BadImage as exc:
            skipped.append({"path": sample.rel, "reason": str(exc)})
            continue
        probs.append(bundle.probabilities(x).mean(0))
        labels.append(bundle.classes.index(sample.label))
    for s in skipped:
        log.warning("skipped %s: %s", s["path"], s["reason"])
    return (
        np.array(labels, dtype=np.int64),
        np.array(probs).reshape(-1, len(bundle.classes)),
        skipped,
    )


def evaluate_point(run: RunDir, point: int, data: str | None, log) -> dict | None:
    bundle_dir = run.root / "train" / str(point) / "model"
    if not (bundle_dir / "meta.json").exists():
        log.error("point %d has no trained model at %s", point, bundle_dir)
        return None
    bundle = load_bundle(bundle_dir)
    skipped: list[dict] = []
    if data:
        labels, probs, skipped = predict_files(bundle, data, run, log)
        name = "metrics-" + Path(data).stem + ".json"
    else:
        labels, probs = predict_split(bundle, run.root)
        name = "metrics.json"
    metrics = classification_metrics(labels, probs, bundle.classes)
    metrics.update(
        {
            "point": point,
            "params": run.plan["points"][point],
            "data": data or "validation split",
            "skipped": skipped,
        }
    )
    metrics["training"] = read_json(run.root / "train" / str(point) / "progress.json", {})
    write_json_atomic(run.root / "eval" / str(point) / name, metrics)
    log.info(
        "point %d: accuracy %.3f, balanced accuracy %.3f on %d images",
        point,
        metrics["accuracy"],
        metrics["balanced_accuracy"],
        metrics["samples"],
    )
    return metrics


def leaderboard(run: RunDir, results: dict[int, dict]) -> list[dict]:
    """Sweep points ranked by evaluate.rank_by (best first); the best one becomes RUN_DIR/model."""
    key = run.spec.evaluate.rank_by
    rows = [
        {
            "point": p,
            "params": m["params"],
            "accuracy": m["accuracy"],
            "balanced_accuracy": m["balanced_accuracy"],
            "macro_f1": m["macro_f1"],
            "roc_auc": m["roc_auc"],
        }
        for p, m in results.items()
    ]
    rows.sort(key=lambda r: (-(r[key] if r[key] is not None else -1), r["point"]))
    write_json_atomic(run.root / "eval" / "leaderboard.json", {"rank_by": key, "rows": rows})
    if rows:
        publish_model(run, rows[0]["point"])
    return rows


def main(args: argparse.Namespace) -> int:
    log = setup_logging()
    run = RunDir.open(args.run_dir)
    points = range(len(run.plan["points"])) if args.all else [args.point]
    try:
        results = {
            p: m for p in points if (m := evaluate_point(run, p, args.data, log)) is not None
        }
    except CatalogError as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
    if not results:
        print("xvhpc: error: no trained model to evaluate", file=sys.stderr)
        return 1
    if args.all and not args.data:
        rows = leaderboard(run, results)
        for r in rows:
            log.info(
                "leaderboard: point %d %s %s=%.3f",
                r["point"],
                r["params"],
                run.spec.evaluate.rank_by,
                r[run.spec.evaluate.rank_by] or 0,
            )
    return 0 if len(results) == len(list(points)) else 1
