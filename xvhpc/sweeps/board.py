"""Sweep results for people: trial states in the leaderboard, ``xvhpc status`` lines, and the
report's plots (metric against each parameter; every trial's validation curve, pruned ones grey).
Torch-free."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..registry import task_info
from ..rundir import Layout
from ..spec.schema import ExperimentSpec
from ..util import read_json
from .study import is_study, summary, trial_rows

STATE_COLOURS = {"done": "tab:blue", "stopped_early": "tab:green", "pruned": "0.65"}


def point_state(root: Path, point: int) -> str:
    """done / pruned / stopped_early / running / … from the point's progress file."""
    progress = read_json(Layout(root).progress(point)) or {}
    return str(progress.get("state", "not started"))


def pruned(root: Path, point: int) -> bool:
    """A pruned point is no candidate: evaluate skips it (its weights may have diverged)."""
    return point_state(root, point) == "pruned"


def annotate_leaderboard(root: Path, spec: ExperimentSpec, rows: list[dict[str, Any]]) -> None:
    """Give each leaderboard row its state, and a study slot's row its trial and parameters
    (the plan holds only the fixed part of a study's points); points evaluate skipped
    (pruned, failed) get a row without metrics, so the board lists every trial."""
    trials = {r["slot"]: r for r in trial_rows(root, spec) if r["slot"] is not None}
    plan = read_json(Layout(root).plan) or {}
    metric_keys = [k for k in (rows[0] if rows else {}) if k not in ("point", "params", "ci")]
    seen = {r["point"] for r in rows}
    for p, params in enumerate(plan.get("points", [])):
        if p not in seen and (Layout(root).progress(p).exists() or p in trials):
            rows.append({"point": p, "params": params, **dict.fromkeys(metric_keys), "ci": {}})
    for row in rows:
        row["state"] = point_state(root, row["point"])
        trial = trials.get(row["point"])
        if is_study(spec):
            bound = read_json(Layout(root).trial(row["point"])) or {}
            row["trial"] = bound.get("trial")
            row["params"] = bound.get("params", row["params"])
            if trial is not None and trial["trial"] == row["trial"]:
                row["state"] = trial["state"]
                row["objective"] = trial["value"]


def params_text(params: dict[str, Any]) -> str:
    """Parameters for people: a float from a range to 4 significant digits, not 17."""
    shown = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in params.items()}
    return json.dumps(shown, sort_keys=True)


def status_line(root: Path, spec: ExperimentSpec) -> str | None:
    """``trials 6/6: 4 done, 0 running, 2 pruned, 0 failed; best trial 3 (slot 2) …``."""
    if not is_study(spec):
        return None
    info = summary(root, spec)
    if info is None:
        return "study: no trial started yet"
    text = (
        f"trials {info['done'] + info['pruned'] + info['failed']}/{info['trials']} finished: "
        f"{info['done']} done, {info['running']} running, {info['pruned']} pruned, "
        f"{info['failed']} failed"
    )
    if info["orphaned"]:
        text += (
            f", {info['orphaned']} orphaned (RUNNING with no live task: a requeue or a rerun "
            "of its slot resumes it from its checkpoint)"
        )
    best = info["best"]
    if best is not None:
        text += (
            f"; best trial {best['trial']} (slot {best['slot']}) {info['objective']} "
            f"{best['value']:.4f} {params_text(best['params'])}"
        )
    return text


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def scatter_figure(rows: list[dict[str, Any]], key: str) -> Any:  # a matplotlib Figure
    """The ranked metric against each swept parameter, one panel each; colour is the state."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k for r in rows for k in r["params"]})
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4 * max(1, len(names)), 3.2))
    axes = list(axes) if len(names) > 1 else [axes]
    for ax, name in zip(axes, names, strict=False):
        shown = [r for r in rows if name in r["params"] and r.get(key) is not None]
        values = [r["params"][name] for r in shown]
        if _numeric(values):
            xs = [float(v) for v in values]
            if xs and min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
        else:
            labels = sorted({json.dumps(v) for v in values})
            xs = [float(labels.index(json.dumps(v))) for v in values]
            ax.set_xticks(range(len(labels)), labels, rotation=30)
        colours = [STATE_COLOURS.get(r.get("state", "done"), "tab:red") for r in shown]
        ax.scatter(xs, [r[key] for r in shown], c=colours, edgecolors="k", linewidths=0.5)
        ax.set_xlabel(name)
        ax.set_ylabel(key)
    fig.suptitle("blue: done, green: stopped early, grey: pruned", fontsize=9)
    return fig


def curves_figure(root: Path, points: list[int], states: dict[int, str], metric: str) -> Any:
    """Every point's validation curve in one plot; pruned points grey, behind the rest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for p in points:
        path = Layout(root).metrics_log(p)
        if not path.exists():
            continue
        rounds = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        pts = [(r["iteration"], r[metric]) for r in rounds if metric in r and "event" not in r]
        pts = [(i, v) for i, v in pts if not math.isnan(v)]
        if not pts:
            continue
        pruned = states.get(p) == "pruned"
        ax.plot(
            *zip(*pts, strict=True),
            color="0.7" if pruned else None,
            zorder=1 if pruned else 2,
            marker=".",
            label=None if pruned else f"point {p}",
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric)
    ax.set_title("validation per point (grey: pruned)", fontsize=9)
    return fig


def report_section(root: Path, spec: ExperimentSpec, png: Callable[[Any], str]) -> str:
    """HTML for the report: the scatter of metric vs parameters and all validation curves.
    ``png`` turns a figure into a data URI (the report's own helper)."""
    board = read_json(Layout(root).leaderboard)
    plan = read_json(Layout(root).plan) or {}
    if not board or len(plan.get("points", [])) < 2:
        return ""
    rows = board["rows"]
    key = board["rank_by"]
    states = {int(r["point"]): str(r.get("state", "done")) for r in rows}
    points = list(range(len(plan["points"])))
    metric = (spec.sweep and spec.sweep.objective) or task_info(spec.task).selection
    parts = ["<h2>Sweep: metric against each parameter</h2>"]
    if any(r["params"] for r in rows):
        parts.append(f'<img src="{png(scatter_figure(rows, key))}" alt="metric vs parameters">')
    parts.append(f'<img src="{png(curves_figure(root, points, states, metric))}" alt="curves">')
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s] = counts.get(s, 0) + 1
    shown = ", ".join(f"{n} {html.escape(s)}" for s, n in sorted(counts.items()))
    parts.append(f"<p class='note'>Points by state: {shown}.</p>")
    return "\n".join(parts)
