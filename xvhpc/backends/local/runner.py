"""The local site's runner: xvhpc runs the compiled scripts here, one after another (no queue),
recording each step's state in jobs.json as a scheduler would."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ...rundir import JOBS, Layout
from ...util import open_append, read_json, write_json_atomic
from ..base import job_env

if TYPE_CHECKING:
    from ...plan.step import Plan
    from ...spec import SiteConfig


def run_local(plan: Plan, site: SiteConfig) -> int:
    """Run the compiled scripts here, in order; a rerun skips finished steps and resumes the rest."""
    root = Path(plan.run_dir)
    state = read_json(root / JOBS)
    if (
        not state
        or state.get("spec_hash") != plan.spec_hash
        or state.get("scheduler") != site.scheduler
    ):
        state = {
            "scheduler": site.scheduler,
            "site": site.name,
            "spec_hash": plan.spec_hash,
            "steps": {},
        }
    env = job_env()
    env["XVHPC_PYTHON"] = sys.executable
    if sys.stdout.isatty():
        env["XVHPC_PROGRESS"] = "bar"
    for step in plan.steps:
        done = state["steps"].get(step.name, {})
        if done.get("state") == "COMPLETED":
            print(f"== {step.name}: already completed, skipping")
            continue
        print(f"== {step.name}", flush=True)
        log = Layout(root).local_log(step.name)
        started = time.monotonic()
        with open_append(log, binary=True) as fh:  # never through a link planted there
            proc = subprocess.Popen(
                ["bash", str(Layout(root).script(step.name, ".sh"))],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]  # raw chunks, so progress bars redraw in place
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                fh.write(chunk)
            code = proc.wait()
        status = "COMPLETED" if code == 0 else "FAILED"
        state["steps"][step.name] = {
            "job_id": "local",
            "state": status,
            "exit_code": code,
            "seconds": round(time.monotonic() - started, 1),
        }
        write_json_atomic(root / JOBS, state)
        if code != 0:
            print(
                f"xvhpc: error: step {step.name} failed (exit {code}); log: {log}. Rerun the same command to continue.",
                file=sys.stderr,
            )
            return code
    if any(s.name == "report" for s in plan.steps):  # a pipeline (not a predict job)
        print(
            f"done: report {Layout(root).report}, model {Layout(root).model} (serve it with: xvhpc serve {root})"
        )
    return 0
