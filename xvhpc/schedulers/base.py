"""The Scheduler interface: everything xvhpc says to, or reads from, one batch system.

Each scheduler module owns all of its commands and output parsing (directives, submit line,
job-id parsing, status query, cancel, requeue); the rest of xvhpc asks the registry and never
compares scheduler names. Rendering methods are pure functions of their arguments; query methods
run commands only through a :class:`~xvhpc.schedulers.commands.CommandRunner`.
"""

from __future__ import annotations

import shlex
from typing import ClassVar

from ..plan.model import Plan, Step
from ..registry import Registry
from ..rundir import REQUEUE_EXIT
from ..spec import SiteConfig
from .commands import CommandRunner

__all__ = [
    "FINAL_BAD",
    "FINAL_OK",
    "PURGED",
    "REQUEUE_EXIT",
    "SCHEDULERS",
    "Scheduler",
    "shell_join",
]

# Normalised job states every scheduler maps its own onto (Slurm's names).
FINAL_OK = frozenset({"COMPLETED"})
# ended long ago and forgotten by the scheduler (LSF CLEAN_PERIOD): final, its outcome unknown
PURGED = "PURGED"
FINAL_BAD = frozenset(
    {
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "DEPENDENCY_NEVER_SATISFIED",
    }
)


class Scheduler:
    """One batch system.

    Job ids returned by :meth:`query_states` are ``ID`` for a plain job and ``ID_i`` (``i`` from
    0) for array element ``i``, whatever the scheduler's own spelling.
    """

    name: ClassVar[str]
    suffix: ClassVar[str] = ".sh"
    needs: ClassVar[tuple[str, ...]] = ()
    native_arrays: ClassVar[bool] = True
    runs_here: ClassVar[bool] = False  # True: xvhpc runs the scripts itself (no queue, no job ids)
    whole_nodes: ClassVar[bool] = False  # True: jobs are given and charged whole nodes (CSM)

    # -- rendering (pure) -------------------------------------------------------------------
    def directives(self, step: Step, plan: Plan, site: SiteConfig) -> list[str]:
        """Header lines (without the shebang), sorted."""
        return []

    def prologue(self, step: Step, site: SiteConfig) -> list[str]:
        """Shell lines that set XVHPC_INDEX (arrays) and MASTER_ADDR/PORT (distributed)."""
        return []

    def requeue_command(self) -> str:
        """Shell that requeues the running job (empty: cannot)."""
        return ""

    def submit_argv(
        self, script: str, after: list[str], ended: bool = False
    ) -> tuple[list[str], bool]:
        """argv that submits ``script`` after job ids ``after`` (succeeded; ``ended``: ended in
        any state); True when the script goes on stdin."""
        raise NotImplementedError

    def submit_shell(
        self, var: str, script: str, after_vars: list[str], ended: bool = False
    ) -> list[str]:
        """Lines of the hand-run ``submit.sh`` that submit ``script`` and set ``$var`` to its id."""
        raise NotImplementedError

    def test_argv(self, script: str) -> list[str] | None:
        """argv that has the scheduler check ``script`` without queueing it (None: it cannot)."""
        return None

    # -- parsing and queries --------------------------------------------------------------
    def parse_job_id(self, stdout: str) -> str:
        """The job id in what the submit command printed (ValueError when there is none)."""
        raise NotImplementedError

    def query_states(self, job_ids: list[str], runner: CommandRunner) -> dict[str, str]:
        """Normalised state of every job and array element, from one scheduler query."""
        raise NotImplementedError

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        """argv that cancels these jobs (arrays whole)."""
        raise NotImplementedError

    def find_jobs(self, tag: str, runner: CommandRunner) -> list[str]:
        """Ids of this user's unfinished jobs tagged ``tag`` (``Plan.token``-step, written into
        the script): a submit whose reply was lost checks here before it submits again."""
        return []


SCHEDULERS: Registry[Scheduler] = Registry("scheduler")


def shell_join(argv: list[str]) -> str:
    """Quote argv for a shell line, leaving ``${var}`` references (xvhpc's own) expandable."""
    return " ".join(f'"{a}"' if "${" in a else shlex.quote(a) for a in argv)
