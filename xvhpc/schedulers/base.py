"""Schedulers: directives, array index, submit argv, job-id parsing, requeue command."""

from __future__ import annotations

from typing import ClassVar

from ..plan.model import Plan, Step
from ..registry import Registry
from ..rundir import REQUEUE_EXIT
from ..spec import SiteConfig


__all__ = ["REQUEUE_EXIT", "SCHEDULERS", "Scheduler"]


class Scheduler:
    """One batch system. Rendering methods are pure functions of their arguments."""

    name: ClassVar[str]
    suffix: ClassVar[str] = ".sh"
    needs: ClassVar[tuple[str, ...]] = ()
    native_arrays: ClassVar[bool] = True

    def directives(self, step: Step, plan: Plan, site: SiteConfig) -> list[str]:
        """Header lines (without the shebang), sorted."""
        return []

    def prologue(self, step: Step, site: SiteConfig) -> list[str]:
        """Shell lines that set XVHPC_INDEX (arrays) and MASTER_ADDR/PORT (distributed)."""
        return []

    def requeue_command(self) -> str:
        """Shell that requeues the running job (empty: cannot)."""
        return ""

    def submit_argv(self, script: str, after: list[str]) -> tuple[list[str], bool]:
        """argv that submits ``script`` after job ids ``after``; True when the script goes on stdin."""
        raise NotImplementedError

    def parse_job_id(self, stdout: str) -> str:
        raise NotImplementedError


SCHEDULERS: Registry[Scheduler] = Registry("scheduler")
