"""What evaluating any task needs, task-blind: where each scored record came from and its group
(patient), a figure in one line, which points to score and which failed, the leaderboard that
publishes the best point (the paths are ``rundir.Layout``'s).

Every task's ``evaluate`` (and its cross-validation pooling and report section) and the
evaluate/report drivers use these, so no task reaches into another module's private names and
the drivers never name a task.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .registry import load_task, task_info
from .report.html import ci, fmt, table, value
from .rundir import Layout
from .rundir.records import read_progress
from .spec.points import CvPoint, cv_points, is_final_fit
from .sweeps.board import annotate_leaderboard, pruned
from .util import read_json, write_json_atomic

if TYPE_CHECKING:
    from .data.dataset import Index
    from .rundir.run import RunDir
    from .spec import ExperimentSpec

_PART = re.compile(r"(#frame\d+)?(#tile\d+)?$")

# a point's training that ended in one of these did not finish: its bundle (written at each
# better validation) is a half-trained model, never ranked or published (issue 22 N10)
UNFINISHED = ("running", "checkpointed")


class EvaluateError(Exception):
    """The evaluation cannot be done as asked (exit 2)."""


def image_of(source: str) -> str:
    """The file a shard record came from (``rel#frame2#tile0`` → ``rel``)."""
    return _PART.sub("", source, count=1)


def sources(index: Index) -> list[str]:
    """The ``source`` (path within the data, with any frame/tile suffix) of every record of
    ``index``, in its order: what the predictions file names each scored record by."""
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
    from .data.catalog import CatalogError

    groups_of: dict[str, str | None] = {}
    try:
        catalog = load_task(run.spec.task).catalog(run.plan["data_source"], run.spec.data)
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


def show(entry: dict) -> str:
    """A figure for the log: ``0.812 [95% CI 0.701–0.904]``, or ``n/a``."""
    if entry.get("value") is None:
        return "n/a"
    if entry.get("ci_low") is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [95% CI {entry['ci_low']:.3f}–{entry['ci_high']:.3f}]"


def pooling(spec: ExperimentSpec) -> bool:
    """Whether the run cross-validates (its points' out-of-fold predictions are pooled)."""
    return bool(spec.data.split.folds) and spec.data.split.fold is None


def published_metrics(run: RunDir, point: int) -> dict:
    """The metrics that describe the published model: with folds the pooled ones of its sweep
    point (its decision rule was fitted on them), else its own."""
    if pooling(run.spec):
        for c, group in enumerate(cv_points(run.plan["points"])):
            if group.deployed == point:
                return read_json(Layout(run.root).pooled_metrics(c)) or {}
    return read_json(Layout(run.root).eval_metrics(point)) or {}


def best_point(run: RunDir) -> int:
    """The published point: the leaderboard's first row (0 before any leaderboard)."""
    board = read_json(Layout(run.root).leaderboard)
    return int(board["rows"][0]["point"]) if board and board.get("rows") else 0


def unfinished(run: RunDir, point: int) -> str | None:
    """The progress state of a point whose training did not finish, else None."""
    progress = read_progress(Layout(run.root).progress(point))
    state = progress.state if progress else None
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
    """Sweep points ranked by evaluate.rank_by (one of the task's ``rank_by``, checked at spec
    load; best first); the best one becomes RUN_DIR/model.

    Rows hold plain point estimates of the task's rank_by figures (what `xvhpc status` prints)
    and their intervals in ``ci``."""
    from .models.bundle import publish_model  # late: the report reads this module torch-free

    key = run.spec.evaluate.rank_by
    figures = task_info(run.spec.task).rank_by
    rows = [
        {
            "point": p,
            "params": m["params"],
            **{k: value(m[k]) for k in figures},
            "ci": {
                k: [m[k].get("ci_low"), m[k].get("ci_high")]
                for k in figures
                if isinstance(m[k], dict)
            },
        }
        for p, m in results.items()
    ]
    annotate_leaderboard(run.root, run.spec, rows)  # state; a study slot's trial and params
    if pooling(run.spec):  # one row per sweep point, not one per fold
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
    published = _digest(layout.bundle().weights)
    if published is None:
        return
    for p in points:
        src = layout.bundle(p)
        if _digest(src.weights) == published and src.decision.exists():
            target = layout.bundle().decision
            tmp = target.with_name(target.name + ".copy")
            shutil.copyfile(src.decision, tmp)
            tmp.replace(target)
            log.info("published model: decision rule of point %d", p)
            return


# ----- cross-validation: what pooling any task's folds shares ------------------------------


def deployed_text(group: CvPoint) -> str:
    """How the model published for this sweep point was trained (the report says it)."""
    if group.final is None:
        return f"fold 0's model (training point {group.folds[0]}); not refitted on all data"
    return (
        f"the final fit (training point {group.final}) on every fold's training records; it "
        "has no held-out data, so the figures shown are the pooled out-of-fold ones"
    )


def evaluated_groups(
    run: RunDir, found: dict[int, dict], log: logging.Logger
) -> Iterator[tuple[int, CvPoint]]:
    """Each sweep point (its index and folds) whose folds were all evaluated into ``found``;
    one with a fold missing is logged and left out (no pooled figures from part of the data)."""
    for c, group in enumerate(cv_points(run.plan["points"])):
        missing = [p for p in group.folds if p not in found]
        if missing:
            log.error("sweep point %d: folds %s not evaluated; no pooled figures", c, missing)
            continue
        yield c, group


def fold_spread(
    results: dict[int, dict], members: list[int], keys: tuple[str, ...]
) -> dict[str, Any]:
    """Each figure (``keys`` of the folds' metrics) per fold, with the mean and standard
    deviation across folds."""
    out: dict[str, Any] = {}
    for key in keys:
        values = [value(results[p][key]) for p in members]
        known = [v for v in values if v is not None]
        out[key] = {
            "per_fold": values,
            "mean": statistics.fmean(known) if known else None,
            "sd": statistics.stdev(known) if len(known) > 1 else None,
        }
    return out


def coverage(paths: list[str]) -> dict[str, Any]:
    """How many records the pooled folds scored, and any scored more than once (must be none)."""
    seen: dict[str, int] = {}
    for path in paths:
        seen[path] = seen.get(path, 0) + 1
    twice = sorted(p for p, n in seen.items() if n > 1)
    return {"records": len(paths), "scored_more_than_once": twice[:100]}


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


def crossval_intro(run: RunDir, manifest: dict) -> list[str]:
    """The report's opening of a cross-validation section: the folds' class counts and what
    pooling means (any task's ``crossval_section`` starts with it)."""
    folds = (manifest or {}).get("folds") or {}
    parts = [f"<h2>Cross-validation: {run.spec.data.split.folds} group folds</h2>"]
    per = folds.get("per_fold_class") or []
    if per:
        classes = sorted({c for counts in per for c in counts})
        rows = [[k, *(counts.get(c, 0) for c in classes)] for k, counts in enumerate(per)]
        parts.append(table(["fold", *classes], rows))
    parts.append(
        "<p class='note'>Each patient/group is in one fold; each fold's model trains on the "
        "others (their augmented copies included, never a copy of a held-out image) and scores "
        "its own fold. Pooled: every original image scored once, by a model that never saw it "
        "or its patient. With several sweep points the best one is chosen on these pooled "
        "figures, so its own figure is somewhat optimistic.</p>"
    )
    return parts


def spread_table(metrics: dict, keys: tuple[str, ...]) -> str:
    """A sweep point's pooled figures (``keys``) beside their mean ± sd and values per fold."""
    spread = metrics["fold_spread"]
    shown = json.dumps(metrics["params"]) if metrics["params"] else ""
    rows = [
        [
            key,
            ci(metrics[key]),
            f"{fmt(spread[key]['mean'])} ± {fmt(spread[key]['sd'])}",
            ", ".join(fmt(v) for v in spread[key]["per_fold"]),
        ]
        for key in keys
    ]
    return f"<h3>Pooled out-of-fold figures {html.escape(shown)}</h3>" + table(
        ["figure", "pooled (95 % CI)", "mean ± sd across folds", "per fold"], rows
    )
