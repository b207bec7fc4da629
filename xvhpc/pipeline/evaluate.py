"""``xvhpc evaluate``: score each point's model (the task's ``evaluate_point``), pool
cross-validation folds (the task's ``pool``), rank the points on the leaderboard, which
publishes the best to RUN_DIR/model with its decision rule.

Task-blind: what a point's figures are and what is written beside them belong to the task
(``xvhpc/tasks/<name>/evaluate.py``); the shared parts are in ``xvhpc/evaluation.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from ..data.catalog import CatalogError
from ..evaluation import (
    EvaluateError,
    candidates,
    failed_points,
    leaderboard,
    pooling,
    sync_published_decision,
    unfinished,
)
from ..registry import load_task
from ..rundir.run import RunDir
from .common import setup_logging

if TYPE_CHECKING:
    from ..tasks.base import Task


def pooled_or_points(
    task: Task,
    run: RunDir,
    results: dict[int, dict],
    found: dict[int, dict],
    args: argparse.Namespace,
    log: logging.Logger,
) -> dict[int, dict]:
    """What the leaderboard ranks: pooled out-of-fold figures when cross-validating (all
    points on their own held-out folds; one point alone pools nothing)."""
    if not results or args.data or not args.all or not pooling(run.spec):
        return results
    return task.pool(run, results, found, log)


def log_leaderboard(rows: list[dict], key: str, log: logging.Logger) -> None:
    """One line per ranked point, best first."""
    for r in rows:
        log.info("leaderboard: point %d %s %s=%.3f", r["point"], r["params"], key, r[key] or 0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``xvhpc evaluate``'s flags."""
    p.add_argument("--run-dir", required=True)
    p.add_argument("--point", type=int, default=0)
    p.add_argument("--all", action="store_true", help="every sweep point, then the leaderboard")
    p.add_argument("--data", help="a labelled folder or CSV instead of the validation split")


def main(args: argparse.Namespace) -> int:
    log = setup_logging()
    run = RunDir.open(args.run_dir)
    task = load_task(run.spec.task)
    points = candidates(run) if args.all else [args.point]
    found: dict[int, dict] = {}
    try:
        results = {
            p: m
            for p in points
            if (m := task.evaluate_point(run, p, args.data, log, found)) is not None
        }
        ranked = pooled_or_points(task, run, results, found, args, log)
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
        log_leaderboard(leaderboard(run, ranked, failed), run.spec.evaluate.rank_by, log)
    if not args.data and (args.all or not pooling(run.spec)):
        sync_published_decision(run, [*results, *ranked], log)
    # --all: the points that finished are ranked, the failed ones listed; the report goes on
    return 0 if args.all or not failed else 1
