"""What the dashboard shows of a run directory: its state (the code ``xvhpc status`` runs, with
at most one scheduler query per run every ``every`` seconds however many pages poll), each
point's progress, curves, leaderboard, study trials and log tails. Torch-free; reads only."""

from __future__ import annotations

import json
import math
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import checked_job_ids
from ..backends.commands import CommandRunner, SchedulerCommandError
from ..rundir import JOBS, Layout
from ..rundir.records import Progress
from ..submit import query_states, train_progress
from ..submit.state import FINAL_BAD, FINAL_OK, PURGED
from ..util import CorruptFile, UserError, format_hms
from .security import inside

CURVE_LINES = 20_000  # metrics.jsonl lines read per point (the newest), however long a run ran
LOG_TAIL_BYTES = 16 << 10
MAX_RECORD = 8 << 20  # bytes of one JSON record of a run (plan, jobs, progress, leaderboard)


def record(path: Path, default: Any = None) -> Any:
    """A run's JSON record, read as a shared runs dir may hold it: not through a link, never
    blocking on a FIFO, at most ``MAX_RECORD`` bytes. ``CorruptFile`` names what is wrong."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return default
    except OSError as exc:
        why = "a symbolic link (not followed)" if path.is_symlink() else exc.strerror
        raise CorruptFile(f"{path}: cannot read: {why}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptFile(f"{path}: not a regular file")
        data = fh.read(MAX_RECORD + 1)
    if len(data) > MAX_RECORD:
        raise CorruptFile(f"{path}: larger than {MAX_RECORD >> 20} MB")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise CorruptFile(f"{path} is damaged (not valid JSON)") from None


def _mapping(path: Path) -> dict[str, Any]:
    """A record that must be a JSON object ({} when absent)."""
    value = record(path, {})
    if not isinstance(value, dict):
        raise CorruptFile(f"{path}: expected a JSON object")
    return value


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
        jobs = _mapping(root / JOBS)
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
            except (SchedulerCommandError, KeyError, ValueError, TypeError, AttributeError) as exc:
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


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


def progress(root: Path, points: int) -> list[dict[str, Any]]:
    """Each point's progress record, the fraction done and ``xvhpc status``'s line for it."""
    out = []
    for p in range(points):
        try:
            data = record(Layout(root).progress(p))
        except CorruptFile as exc:
            out.append({"point": p, "text": str(exc), "fraction": 0.0})
            continue
        if not isinstance(data, dict) or not data:
            out.append({"point": p, "text": "no progress yet", "fraction": 0.0})
            continue
        found = Progress.from_json(data)
        total, at = _number(found.max_iterations), _number(found.iteration)
        eta = _number(found.eta_s)
        try:
            text = train_progress(root, p)
        except (UserError, TypeError, ValueError, OverflowError):
            text = f"iteration {at:g}" + (f"/{total:g}" if total else "")
        out.append(
            {
                "point": p,
                "iteration": at,
                "max_iterations": total,
                "fraction": round(min(max(at / total, 0.0), 1.0), 4) if total > 0 else 0.0,
                "state": str(found.state),
                "time_left": format_hms(int(eta)) if 0 < eta < 1e9 else "",
                "text": text,
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
    try:
        board = _mapping(Layout(root).leaderboard)
    except CorruptFile as exc:
        return {"rows": [], "failed": [], "study": str(exc)}
    rows, failed = board.get("rows"), board.get("failed")
    out: dict[str, Any] = {"rank_by": str(board.get("rank_by", ""))}
    out["rows"] = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    out["failed"] = [f for f in failed if isinstance(f, dict)] if isinstance(failed, list) else []
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
    """What the list and the run page poll: state, steps, each point's progress. A damaged
    record (or one that is a link or a FIFO) shows as the run's error, never stops the page."""
    try:
        plan, jobs = _mapping(Layout(root).plan), _mapping(root / JOBS)
        states, error = cache.states(root)
    except CorruptFile as exc:
        return {"name": root.name, "state": "DAMAGED", "site": "", "steps": [], "points": [],
                "error": str(exc), "report": False}  # fmt: skip
    listed = plan.get("steps")
    listed = listed if isinstance(listed, list) else []
    order = [str(s["name"]) for s in listed if isinstance(s, dict) and "name" in s]
    steps = [
        {"name": n, "state": states.get(n, ("—", {}))[0], "job_id": _job(jobs, n)} for n in order
    ]
    points = plan.get("points", [{}])
    return {
        "name": root.name,
        "state": run_state({"steps": [{"name": n} for n in order]}, states, live_here),
        "site": str(jobs.get("site", "")),
        "steps": steps,
        "points": progress(root, min(len(points), 1000) if isinstance(points, list) else 1),
        "error": error,
        "report": Layout(root).report.is_file(),
    }


def _job(jobs: dict[str, Any], step: str) -> str:
    steps = jobs.get("steps")
    entry = steps.get(step) if isinstance(steps, dict) else None
    return str(entry.get("job_id", "")) if isinstance(entry, dict) else ""


def job_ids(root: Path) -> list[str]:
    """The scheduler job ids a cancel would name, each checked to be a job id: a shared run
    dir's jobs.json holding ``--user=me`` must not become ``scancel --user=me``."""
    jobs = _mapping(root / JOBS)
    steps = jobs.get("steps")
    ids = [_job(jobs, s) for s in steps] if isinstance(steps, dict) else []
    try:
        return checked_job_ids(ids, str(root / JOBS))
    except UserError as exc:
        raise CorruptFile(str(exc)) from None
