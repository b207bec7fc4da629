"""Submit, status, cancel and logs (login-node side: no torch); a local site runs its plan through
backends/local/runner.py."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ..backends.base import Scheduler, checked_job_ids, get_scheduler, job_env
from ..backends.commands import CommandRunner, SchedulerCommandError, TransientCommandError
from ..backends.local.runner import run_local
from ..plan.model import Plan
from ..registry import task_infos
from ..rundir import JOBS, SCRIPTS, Layout
from ..rundir.records import read_progress
from ..spec import SiteConfig
from ..util import format_hms, read_json, write_json_atomic
from .state import FINAL_BAD, FINAL_OK, PURGED, step_state


def query_states(
    jobs: dict[str, Any], runner: CommandRunner
) -> dict[str, tuple[str, dict[str, str]]]:
    """Step name → (state, task states), with one scheduler query for the whole run."""
    steps = jobs["steps"]
    scheduler = get_scheduler(jobs["scheduler"])
    if scheduler.runs_here:
        return {name: (s.get("state", "UNKNOWN"), {}) for name, s in steps.items()}
    try:
        states = scheduler.query_states([s["job_id"] for s in steps.values()], runner)
    except ValueError as exc:  # output the parser does not understand
        raise SchedulerCommandError(str(exc)) from None
    out = {name: step_state(s["job_id"], states) for name, s in steps.items()}
    for name, (state, tasks) in out.items():
        if state == "COMPLETED" and len(tasks) < int(steps[name].get("array") or 0):
            # elements cancelled while pending never reach accounting (sacct -X)
            out[name] = ("CANCELLED", tasks)
    return out


def _live(states: dict[str, tuple[str, dict[str, str]]]) -> list[str]:
    return [n for n, (st, _) in states.items() if st not in FINAL_OK | FINAL_BAD | {PURGED}]


def submit_plan(
    plan: Plan,
    site: SiteConfig,
    dry_run: bool = False,
    force: bool = False,
    runner: CommandRunner | None = None,
) -> int:
    """Submit every step in dependency order; record job ids in jobs.json as they come."""
    runner = runner or CommandRunner()
    root = Path(plan.run_dir)
    scheduler = get_scheduler(site.scheduler)
    if scheduler.runs_here:
        return run_local(plan, site)
    previous = read_json(root / JOBS)
    if previous and not dry_run and not force:
        try:
            live = _live(query_states(previous, runner))
        except SchedulerCommandError as exc:
            print(f"xvhpc: error: cannot check the earlier submission: {exc}", file=sys.stderr)
            return 1
        if live:
            print(
                f"xvhpc: error: {root} already has live jobs ({', '.join(live)}); `xvhpc cancel {root}` first, or --force",
                file=sys.stderr,
            )
            return 1
    steps: dict[str, dict[str, Any]] = {}
    jobs: dict[str, Any] = {
        "scheduler": site.scheduler,
        "site": site.name,
        "spec_hash": plan.spec_hash,
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "steps": steps,
    }
    ids: dict[str, str] = {}
    print(f"{len(plan.steps)} job(s) on {site.name}; at most {plan.node_hours()} node-hours")
    for step in plan.steps:
        script = f"{SCRIPTS}/{step.name}{scheduler.suffix}"
        after = [ids.get(a, f"<{a}>") for a in step.after]
        argv, stdin = scheduler.submit_argv(script, after, step.after_ended)
        shown = shlex.join(argv) + (f" < {script}" if stdin else "")
        if dry_run:
            print(shown)
            ids[step.name] = f"<{step.name}>"
            continue
        try:
            job_id = _submit_once(
                scheduler,
                argv,
                (root / script).read_text() if stdin else None,
                f"{plan.token}-{step.name}",
                root,
                runner,
            )
        except (SchedulerCommandError, ValueError) as exc:
            print(f"xvhpc: error: submitting {step.name}: {exc}", file=sys.stderr)
            write_json_atomic(root / JOBS, jobs)
            return 1
        ids[step.name] = job_id
        # elements the scheduler holds: a packed sweep is one plain job, not its points (N3)
        jobs["steps"][step.name] = {
            "job_id": job_id,
            "array": step.scheduler_array,
            "command": shown,
        }
        write_json_atomic(root / JOBS, jobs)
        print(f"{step.name:9s} {job_id}")
    if not dry_run:
        print(f"submitted {len(ids)} jobs; follow with: xvhpc status {root}")
    return 0


def test_plan(plan: Plan, site: SiteConfig, runner: CommandRunner | None = None) -> int:
    """Have the scheduler check every job script (account, partition, QoS, GRES, limits) before
    a chain of jobs is queued; print what it says of each. Nothing is submitted."""
    scheduler = get_scheduler(site.scheduler)
    root = Path(plan.run_dir)
    runner = runner or CommandRunner(retries=1)
    bad = 0
    for step in plan.steps:
        script = f"{SCRIPTS}/{step.name}{scheduler.suffix}"
        argv = scheduler.test_argv(script)
        if argv is None:
            print(
                f"xvhpc: {site.scheduler} has no scheduler-side dry run (bsub has no test "
                "mode); validate and compile checked the spec against the site's limits. "
                "HINT: xvhpc submit --dry-run prints the bsub commands",
                file=sys.stderr,
            )
            return 2
        try:
            said = runner.run(argv, cwd=str(root), with_stderr=True)
            print(f"{step.name:9s} ok: {said.strip().splitlines()[-1] if said.strip() else ''}")
        except SchedulerCommandError as exc:
            bad += 1
            print(f"{step.name:9s} REFUSED: {exc}", file=sys.stderr)
    return 1 if bad else 0


def _submit_once(
    scheduler: Scheduler,
    argv: list[str],
    stdin: str | None,
    tag: str,
    root: Path,
    runner: CommandRunner,
) -> str:
    """Submit, retrying a controller time-out only after checking that the lost reply did
    not submit the job after all (it is found by its tag): never two copies of a step."""
    attempts = runner.retries + 1
    for attempt in range(attempts):
        try:
            out = runner.run(argv, stdin=stdin, env=job_env(), cwd=str(root), retries=0)
            return scheduler.parse_job_id(out)
        except TransientCommandError:
            if attempt == attempts - 1:
                raise
            found = scheduler.find_jobs(tag, runner)
            if found:
                print(f"xvhpc: the scheduler timed out, but job {found[0]} ({tag}) was submitted")
                return found[0]
            runner.backoff(attempt)
    raise AssertionError("unreachable")


def train_progress(root: Path, point: int) -> str:
    """One line of a training point's progress: iteration, loss, speed, time left, the task's
    selection metric, requeues."""
    layout = Layout(root)
    progress = read_progress(layout.progress(point))
    requeues = layout.requeues(point)
    if progress is None:
        return "no progress yet"
    total = progress.max_iterations
    text = f"iteration {progress.iteration}" + (f"/{total}" if total else "")
    if progress.loss is not None:
        text += f", loss {progress.loss:.3f}"
    if progress.images_per_s:  # summed over ranks; per rank = per GPU on GPU nodes
        per_rank = progress.images_per_s / max(int(progress.world_size or 1), 1)
        wait = progress.data_wait_fraction or 0.0
        text += f", {per_rank:.1f} img/s per rank (data wait {wait:.0%})"
    if progress.state == "running" and progress.eta_s:
        text += f", {format_hms(int(progress.eta_s))} left"
    for info in task_infos().values():  # the progress record of any task names its metric
        if isinstance(value := progress.get(info.selection), int | float):
            text += f", {info.selection_label} {value:.3f}"
            break
    if requeues or progress.resumed_from:
        text += f"; requeued {requeues}x, resumed at {progress.resumed_from}"
    return text


def ingest_summary(root: Path) -> str:
    manifest = read_json(Layout(root).manifest)
    if not manifest:
        return ""
    n = sum(s["count"] for s in manifest["shards"])
    reasons: dict[str, int] = {}
    for s in manifest["skipped"]:
        key = s["reason"].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    detail = ", ".join(f"{v} {k}" for k, v in sorted(reasons.items()))
    seconds = manifest.get("ingest_seconds")  # summed over shard tasks
    rate = f", {manifest['inputs'] / seconds:.0f} files/s per task" if seconds else ""
    skipped = f"{len(manifest['skipped'])} skipped" + (f" ({detail})" if detail else "")
    return f"{n} images, {skipped}{rate}"


def evaluate_summary(root: Path, points: int) -> str:
    """Evaluation time (metrics.json "seconds"), so a user sees which stage bounds the run."""
    layout = Layout(root)
    found = [read_json(layout.eval_metrics(p), {}) for p in range(points)]
    times = [m["seconds"] for m in found if isinstance(m.get("seconds"), int | float)]
    return f"{sum(times):.1f} s for {len(times)} point(s)" if times else ""


def print_study(root: Path) -> None:
    """A study's trials done/running/pruned/failed and its best so far (nothing otherwise)."""
    from ..spec import load_spec
    from ..sweeps.board import status_line

    layout = Layout(root)
    if not layout.study_journal.exists() or not layout.spec.exists():
        return
    from ..util import UserError

    try:
        line = status_line(root, load_spec(layout.spec).spec)
    except UserError as exc:  # a damaged journal: say so, and still show the jobs
        print(f"xvhpc: warning: {exc}", file=sys.stderr)
        return
    if line:
        print(f"{'study':9s} {line}")


def print_status(root: Path, as_json: bool = False, runner: CommandRunner | None = None) -> int:
    jobs = read_json(root / JOBS)
    if jobs is None:
        print(
            f"xvhpc: error: {root} has no {JOBS}: nothing was submitted or run there",
            file=sys.stderr,
        )
        return 2
    try:
        states = query_states(jobs, runner or CommandRunner())
    except SchedulerCommandError as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
    plan = read_json(Layout(root).plan, {})
    order = {s["name"]: i for i, s in enumerate(plan.get("steps", []))}
    report = {}
    for name, (state, tasks) in sorted(states.items(), key=lambda kv: order.get(kv[0], 99)):
        entry = {"state": state, "job_id": jobs["steps"][name]["job_id"], "tasks": tasks}
        if name in ("ingest", "merge") and state == "COMPLETED":
            entry["detail"] = ingest_summary(root)
        if name == "evaluate" and state == "COMPLETED":
            entry["detail"] = evaluate_summary(root, len(plan.get("points", [{}])))
        if name == "train":
            entry["detail"] = "; ".join(
                f"point {p}: {train_progress(root, p)}"
                for p in range(len(plan.get("points", [{}])))
            )
        report[name] = entry
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        for name, entry in report.items():
            print(
                f"{name:9s} {entry['state']:10s} {entry['job_id']:>10s}  {entry.get('detail', '')}"
            )
        print_study(root)
        board = read_json(Layout(root).leaderboard)
        if board and board.get("rows"):
            best = board["rows"][0]
            print(
                f"best point {best['point']} {best['params']}: {board['rank_by']} {best[board['rank_by']]:.3f}"
            )
        for f in (board or {}).get("failed", []):
            print(f"failed point {f['point']} {f['params']}: {f['cause']}")
    failed = [n for n, e in report.items() if e["state"] in FINAL_BAD]
    return 1 if failed else 0


def cancel_run(root: Path, runner: CommandRunner | None = None) -> int:
    jobs = read_json(root / JOBS)
    if not jobs or get_scheduler(jobs["scheduler"]).runs_here:
        print("xvhpc: nothing to cancel", file=sys.stderr)
        return 1
    runner = runner or CommandRunner()
    ids = checked_job_ids([s["job_id"] for s in jobs["steps"].values()], str(root / JOBS))
    argv = get_scheduler(jobs["scheduler"]).cancel_argv(ids)
    try:
        runner.run(argv)
    except SchedulerCommandError as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 1
    print(f"cancelled {', '.join(ids)}")
    return 0


def show_logs(root: Path, step: str | None, lines: int) -> int:
    files = sorted(Layout(root).logs.glob(f"{step}[-.]*" if step else "*"))
    if not files:
        print(
            f"xvhpc: no logs{' for ' + step if step else ''} under {root / 'logs'}", file=sys.stderr
        )
        return 1
    for file in files:
        text = file.read_text(errors="replace").splitlines()
        print(f"==> {file} <==")
        print("\n".join(text[-lines:]))
    return 0
