"""The embedded local site: scripts run one after another with bash."""

from __future__ import annotations

from ..plan.model import Plan, Step
from ..spec import SiteConfig
from .base import SCHEDULERS, Scheduler


@SCHEDULERS.register("local")
class LocalScheduler(Scheduler):
    suffix = ".sh"
    native_arrays = False

    def directives(self, step: Step, plan: Plan, site: SiteConfig) -> list[str]:
        return [f"# xvhpc local step {step.name}: runs on this machine, no scheduler"]

    def submit_argv(self, script: str, after: list[str]) -> tuple[list[str], bool]:
        return ["bash", script], False

    def parse_job_id(self, stdout: str) -> str:
        return "local"
