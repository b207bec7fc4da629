"""What the dashboard shows of a run directory: its state (the code ``xvhpc status`` runs, with
at most one scheduler query per run every ``every`` seconds however many pages poll), each
point's progress, curves, leaderboard, study trials and log tails. Torch-free; reads only."""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.commands import CommandRunner, SchedulerCommandError
from ..rundir import JOBS, Layout
from ..rundir.records import read_progress
from ..submit import query_states, train_progress
from ..submit.state import FINAL_BAD, FINAL_OK, PURGED
from ..util import UserError, format_hms, read_json
from .security import inside

CURVE_LINES = 20_000  # metrics.jsonl lines read per point (the newest), however long a run ran
LOG_TAIL_BYTES = 16 << 10


@dataclass
class StatusCache:
    """Scheduler states per run, refreshed at most every ``every`` seconds: a dashboard left
    open in five tabs still asks squeue/bjobs (sacct) once per run per period."""

    every: float = 15.0
    runner: CommandRunner = field(default_factory=lambda: CommandRunner(retries=0))
    _seen: dict[Path, tuple[float, dict[str, Any], str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    queries: int = 0  # scheduler queries made (tests read it)

    def states(self, root: Path) -> tuple[dict[str, Any], str]:
        """Step → (state, tasks) and an error text ('' when the query worked)."""
        jobs = read_json(root / JOBS)
        if not jobs:
            return {}, ""
        with self._lock:
            now = time.monotonic()
            cached = self._seen.get(root)
            if cached and now - cached[0] < self.every and cached[1].get("_jobs") == jobs:
                return cached[1]["states"], cached[2]
            self.queries += 1
            try:
                states, error = query_states(jobs, self.runner), ""
            except (SchedulerCommandError, KeyError, ValueError) as exc:
                states, error = {}, f"cannot ask the scheduler: {exc}"
            self._seen[root] = (now, {"states": states, "_jobs": jobs}, error)
            return states, error

    def forget(self, root: Path) -> None:
        """Drop a run's cached states (after a cancel: the next view asks again)."""
        with self._lock:
            self._seen.pop(root, None)


def run_state(plan: dict[str, Any], states: dict[str, Any], live_here: bool) -> str:
    """One word for a run: the worst step's state, COMPLETED when every step is, RUNNING
    while a step runs (or the local process the dashboard started lives), else COMPILED."""
    words = {name: st for name, (st, _) in states.items()}
    steps = [s["name"] for s in plan.get("steps", [])]
    bad = sorted(set(words.values()) & FINAL_BAD)
    if bad:
        return bad[0]
    if steps and all(words.get(s) in FINAL_OK for s in steps):
        return "COMPLETED"
    live = [w for w in words.values() if w not in FINAL_OK | FINAL_BAD | {PURGED, "UNKNOWN"}]
    if live_here or live:
        return "PENDING" if live and all(w == "PENDING" for w in live) else "RUNNING"
    return "STOPPED" if words else "COMPILED"


def progress(root: Path, points: int) -> list[dict[str, Any]]:
    """Each point's progress record, the fraction done and ``xvhpc status``'s line for it."""
    out = []
    for p in range(points):
        try:
            record = read_progress(Layout(root).progress(p))
        except UserError:
            record = None
        if record is None:
            out.append({"point": p, "text": "no progress yet", "fraction": 0.0})
            continue
        total, at = record.max_iterations or 0, record.iteration or 0
        out.append(
            {
                "point": p,
                "iteration": at,
                "max_iterations": total,
                "fraction": round(min(at / total, 1.0), 4) if total else 0.0,
                "state": record.state,
                "time_left": format_hms(int(record.eta_s)) if record.eta_s else "",
                "text": train_progress(root, p),
            }
        )
    return out


def curves(root: Path, point: int) -> dict[str, list[tuple[float, float]]]:
    """Series by name from a point's metrics.jsonl: training loss, and every validation figure
    (``val_*``) at the iterations it was measured."""
    path = Layout(root).metrics_log(point)
    if not inside(root, path) or not path.is_file():
        return {}
    series: dict[str, list[tuple[float, float]]] = {}
    for line in path.read_text(errors="replace").splitlines()[-CURVE_LINES:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        at = record.get("iteration") if isinstance(record, dict) else None
        if not isinstance(at, int | float):
            continue
        for key, value in record.items():
            if key == "val_samples" or not (key == "loss" or key.startswith("val_")):
                continue
            if isinstance(value, int | float) and math.isfinite(value):
                series.setdefault(key, []).append((float(at), float(value)))
    return series


def log_tails(root: Path, lines: int = 40) -> dict[str, str]:
    """The last ``lines`` lines of each log file (regular files inside the run dir only)."""
    logs = Layout(root).logs
    if not inside(root, logs) or not logs.is_dir():
        return {}
    out = {}
    for file in sorted(logs.iterdir())[:50]:
        if file.is_symlink() or not file.is_file():
            continue
        with file.open("rb") as fh:
            fh.seek(max(0, file.stat().st_size - LOG_TAIL_BYTES))
            text = fh.read().decode(errors="replace")
        out[file.name] = "\n".join(text.splitlines()[-lines:])
    return out


def leaderboard(root: Path) -> dict[str, Any]:
    """The sweep leaderboard (eval/leaderboard.json) and, for a study, its trials."""
    board = read_json(Layout(root).leaderboard, {}) or {}
    out: dict[str, Any] = {"rank_by": board.get("rank_by"), "rows": board.get("rows", [])}
    out["failed"] = board.get("failed", [])
    layout = Layout(root)
    if layout.study_journal.is_file() and layout.spec.is_file():
        from ..spec import SpecError, load_spec
        from ..sweeps.board import status_line
        from ..sweeps.study import trial_rows

        try:
            spec = load_spec(layout.spec).spec
            out["study"] = status_line(root, spec)
            out["trials"] = trial_rows(root, spec)
        except (SpecError, UserError) as exc:
            out["study"] = f"cannot read the study: {exc}"
    return out


def find_runs(runs_dir: Path) -> list[Path]:
    """Run directories directly under ``runs_dir`` (a compiled plan inside; no links)."""
    if not runs_dir.is_dir():
        return []
    found = [
        p
        for p in sorted(runs_dir.iterdir())
        if not p.is_symlink() and p.is_dir() and Layout(p).plan.is_file()
    ]
    return found[:500]


def summary(root: Path, cache: StatusCache, live_here: bool) -> dict[str, Any]:
    """What the list and the run page poll: state, steps, each point's progress."""
    plan = read_json(Layout(root).plan, {}) or {}
    states, error = cache.states(root)
    jobs = read_json(root / JOBS, {}) or {}
    order = [s["name"] for s in plan.get("steps", [])]
    steps = [
        {"name": n, "state": states.get(n, ("—", {}))[0], "job_id": _job(jobs, n)} for n in order
    ]
    return {
        "name": root.name,
        "state": run_state(plan, states, live_here),
        "site": jobs.get("site", ""),
        "steps": steps,
        "points": progress(root, len(plan.get("points", [{}]))),
        "error": error,
        "report": Layout(root).report.is_file(),
    }


def _job(jobs: dict[str, Any], step: str) -> str:
    return str((jobs.get("steps", {}).get(step) or {}).get("job_id", ""))
