"""The one door through which scheduler commands run: throttled, retried, recorded in tests."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

TRANSIENT = (
    "timed out",
    "time out",
    "try again",
    "temporarily unavailable",
    "connection refused",
    "slurm_persist_conn",
    "batch system daemon not responding",
    "lsbatch daemon",
)


class SchedulerCommandError(RuntimeError):
    """A scheduler command failed for good (its stderr is in the message)."""


class TransientCommandError(SchedulerCommandError):
    """A scheduler command kept failing in a way that may pass (time-out, daemon busy)."""


@dataclass
class CommandRunner:
    retries: int = 4
    min_interval_s: float = float(os.environ.get("XVHPC_SUBMIT_INTERVAL", "0.2"))
    timeout_s: float = 60.0
    backoff_s: float = 1.0  # first retry delay, doubled each time up to 30 s
    _last: float = 0.0

    def run(
        self,
        argv: list[str],
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        retries: int | None = None,
        with_stderr: bool = False,
    ) -> str:
        """Run ``argv``; retry transient scheduler failures with backoff; return stdout (and
        stderr after it: ``sbatch --test-only`` answers there)."""
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            wait = self._last + self.min_interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # throttle: never hammer the controller
            self._last = time.monotonic()
            try:
                done = subprocess.run(
                    argv,
                    input=stdin,
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=cwd,
                    timeout=self.timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                message = f"{argv[0]} timed out after {self.timeout_s:.0f} s"
            except FileNotFoundError:
                raise SchedulerCommandError(
                    f"{argv[0]} not found on PATH (is this a {argv[0]} login node?)"
                ) from None
            else:
                if done.returncode == 0:
                    return done.stdout + (done.stderr if with_stderr else "")
                message = (done.stderr or done.stdout).strip()
                if not any(t in message.lower() for t in TRANSIENT):
                    raise SchedulerCommandError(
                        f"{' '.join(argv[:2])} failed (exit {done.returncode}): {message}"
                    )
            if attempt < retries:
                self.backoff(attempt)
        raise TransientCommandError(f"{argv[0]} kept failing: {message}")

    def backoff(self, attempt: int) -> None:
        """Wait before retry ``attempt`` + 1: ``backoff_s`` doubled each time, at most 30 s."""
        time.sleep(min(self.backoff_s * 2**attempt, 30))
