"""The embedded local site: xvhpc runs the scripts one after another with bash (no queue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import SCHEDULERS, Scheduler, shell_join
from ..commands import CommandRunner

if TYPE_CHECKING:
    from ...plan.step import Plan, Step
    from ...spec import SiteConfig


@SCHEDULERS.register("local")
class LocalScheduler(Scheduler):
    suffix = ".sh"
    native_arrays = False
    runs_here = True

    def directives(self, step: Step, plan: Plan, site: SiteConfig) -> list[str]:
        return [f"# xvhpc local step {step.name}: runs on this machine, no scheduler"]

    def submit_argv(
        self, script: str, after: list[str], ended: bool = False
    ) -> tuple[list[str], bool]:
        return ["bash", script], False

    def submit_shell(
        self, var: str, script: str, after_vars: list[str], ended: bool = False
    ) -> list[str]:
        return [shell_join(["bash", script])]

    def parse_job_id(self, stdout: str) -> str:
        return "local"

    def query_states(self, job_ids: list[str], runner: CommandRunner) -> dict[str, str]:
        return {}  # states are recorded in jobs.json by the local runner itself

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return []
