"""The backend interfaces: Scheduler (one batch system), Launcher (how a step starts its ranks)
and JobEnvironment (who a process is inside a job), and their registries.

A backend is one folder, ``xvhpc/backends/<name>/``: ``scheduler.py`` and/or ``launcher.py``
register their classes here on import (found by ``registry.discover``, so adding a backend edits
nothing outside its folder), ``environment.py`` reads the job-side variables (stdlib only: every
training rank imports it; ``runtime/whoami.py`` lists them in its DETECTION_ORDER) and
``options.py`` declares its site options. The rest of xvhpc asks these registries and never
compares a scheduler or launcher name.

Each scheduler owns all of its commands and output parsing (directives, submit line, job-id
parsing, status query, cancel, requeue). Rendering methods are pure functions of their
arguments; query methods run commands only through a
:class:`~xvhpc.backends.commands.CommandRunner`.

Stdlib only at import time (the plan and site types are annotations): job-side environments
import this module on every rank, and the spec never imports it (backends → spec, not back).
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..registry import Registry, command_available, discover
from ..rundir import REQUEUE_EXIT
from ..util import UserError
from .commands import CommandRunner

if TYPE_CHECKING:
    from ..plan.step import Plan, Step
    from ..spec import SiteConfig

T = TypeVar("T")

__all__ = [
    "FINAL_BAD",
    "FINAL_OK",
    "LAUNCHERS",
    "PURGED",
    "REQUEUE_EXIT",
    "SCHEDULERS",
    "DistInfo",
    "EnvironmentError_",
    "JobEnvironment",
    "Launcher",
    "Scheduler",
    "Shell",
    "availability",
    "get_launcher",
    "get_scheduler",
    "job_env",
    "render_tokens",
    "shell_join",
]

# A job id as schedulers print them (Slurm arrays 12_3, LSF arrays 12[3]): what a run dir's
# jobs.json may hold before it reaches an argv (``--user=me`` must never become an option)
JOB_ID = re.compile(r"[0-9][0-9_.\[\]]{0,40}")


def checked_job_ids(job_ids: list[str], where: str) -> list[str]:
    """``job_ids`` unchanged when each is a job id; ``UserError`` naming ``where`` (the file
    they came from) otherwise: a shared run dir's jobs.json is data, never a command's flags."""
    bad = [str(i) for i in job_ids if not JOB_ID.fullmatch(str(i))]
    if bad:
        raise UserError(f"{where}: {bad[0][:40]!r} is not a job id; not cancelling")
    return [str(i) for i in job_ids]


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
    # its site options (``scheduler_options:``), a backends.options.Options in its folder
    options: ClassVar[type[Any] | None] = None

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


def shell_join(argv: list[str]) -> str:
    """Quote argv for a shell line, leaving ``${var}`` references (xvhpc's own) expandable."""
    return " ".join(f'"{a}"' if "${" in a else shlex.quote(a) for a in argv)


class Shell(str):
    """A token that is shell syntax written by xvhpc itself (``"$RUN_DIR"``), not quoted again."""


def render_tokens(tokens: list[str]) -> str:
    """Join tokens, quoting every literal with shlex.quote (Shell tokens stay as written)."""
    return " ".join(t if isinstance(t, Shell) else shlex.quote(t) for t in tokens)


class Launcher:
    """Turns the per-rank command into the launch line for a step."""

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()
    mpi_ingest: ClassVar[bool] = False  # True: ingest runs as one job of MPI ranks, not an array
    # True: the launcher spawns the ranks itself (torchrun's agent), so a container wraps it
    spawns_ranks: ClassVar[bool] = False
    # True: pyxis (an srun plugin) can run its steps in a container
    runs_pyxis: ClassVar[bool] = False
    # its site options (``launcher_options:``), a backends.options.Options in its folder
    options: ClassVar[type[Any] | None] = None

    def command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        """The launch line of a distributed step (every rank runs ``argv``)."""
        raise NotImplementedError

    def single_command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        """The launch line of a one-process step: as is, where the batch script runs on a
        compute node (Slurm); through the launcher where it runs on a shared launch node."""
        return argv

    def per_node_command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        """One task on each node of the step (node-local staging); once where there is one node."""
        return argv

    def ingest_ranks_per_node(self, site: SiteConfig) -> int:
        """MPI ingest ranks per node."""
        return max(1, site.node.cores)


@dataclass
class Found(Registry[T]):
    """A registry that fills itself on first use by importing ``backends/<folder>/<module>.py``
    of every folder (each registers its classes): nothing lists the backends by hand."""

    module: str = ""

    def _discover(self) -> None:
        if not getattr(self, "_found", False):
            self._found = True
            discover("xvhpc.backends", self.module)

    def get(self, name: str) -> type[T]:
        self._discover()
        return super().get(name)

    def names(self) -> list[str]:
        self._discover()
        return super().names()


SCHEDULERS: Found[Scheduler] = Found("scheduler", "scheduler")
LAUNCHERS: Found[Launcher] = Found("launcher", "launcher")


def job_env() -> dict[str, str]:
    """The environment jobs inherit: the xvhpc Python that submitted them."""
    env = dict(os.environ)
    env.setdefault("XVHPC_PYTHON", sys.executable)
    return env


def get_scheduler(name: str) -> Scheduler:
    return SCHEDULERS.get(name)()


def get_launcher(name: str) -> Launcher:
    return LAUNCHERS.get(name)()


def availability(name: str) -> tuple[bool, str]:
    """Whether a scheduler's commands are on PATH, and why not."""
    return command_available(*SCHEDULERS.get(name).needs)


# -- inside the job: who this process is -------------------------------------------------------
class EnvironmentError_(UserError, RuntimeError):
    """A launcher environment that lacks what xvhpc needs: a clear error, no traceback."""


@dataclass(frozen=True)
class DistInfo:
    environment: str
    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def need(env: Mapping[str, str], name: str, who: str, hint: str) -> str:
    """A variable the environment must set: its absence names it and ends with a HINT."""
    if name not in env or env[name] == "":
        raise EnvironmentError_(f"{who}: environment variable {name} is not set. HINT: {hint}")
    return env[name]


def need_int(env: Mapping[str, str], name: str, who: str, hint: str) -> int:
    """An integer variable the environment must set (same errors as :func:`need`)."""
    value = need(env, name, who, hint)
    try:
        return int(value)
    except ValueError:
        raise EnvironmentError_(
            f"{who}: {name}={value!r} is not an integer. HINT: {hint}"
        ) from None


def mpi_rank0_address(port_hint: int, expected_size: int | None = None) -> tuple[str, int]:
    """Rank 0's IP address and a port, broadcast with mpi4py (whose world must be the
    launcher's: an mpi4py of another MPI gives each rank a world of its own)."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if expected_size is not None and comm.Get_size() != expected_size:
        raise EnvironmentError_(
            f"mpi4py sees {comm.Get_size()} rank(s) but the launcher started {expected_size}. "
            'HINT: build mpi4py against the launcher\'s MPI (MPICC="mpicc -shared" pip install '
            "--no-binary=mpi4py mpi4py)"
        )
    payload = None
    if comm.Get_rank() == 0:
        host = socket.gethostname()
        try:
            addr = socket.gethostbyname(host)
        except OSError:
            addr = "127.0.0.1"
        payload = (addr, port_hint)
    return comm.bcast(payload, root=0)


class JobEnvironment:
    """One launcher's or scheduler's job-side variables (Lightning's ClusterEnvironment shape):
    whether this process runs under it, and its rank, sizes and rendezvous address.

    ``rank_variables``: (rank, local rank) variable names, for the processes that need their
    rank before any rendezvous (locks, one predict chunk per GPU). ``array_index``, ``cpus``
    and the MPI checks describe a batch task that is not a training rank (ingest)."""

    name: ClassVar[str]
    hint: ClassVar[str] = ""
    rank_variables: ClassVar[tuple[str, str] | None] = None

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        raise NotImplementedError

    def info(self, env: Mapping[str, str]) -> DistInfo:
        raise NotImplementedError

    @classmethod
    def launch_rank(cls, env: Mapping[str, str]) -> tuple[int, int] | None:
        """(rank, local rank) from ``rank_variables`` (None: this launcher did not start the
        process); read before any rendezvous, so that only rank 0 locks or writes."""
        if cls.rank_variables is None:
            return None
        rank, local = cls.rank_variables
        if not env.get(rank, "").isdigit():
            return None
        value = env.get(local, "0")
        return int(env[rank]), int(value) if value.isdigit() else 0

    @staticmethod
    def mpi_launched(env: Mapping[str, str]) -> bool:
        """True when an MPI launcher of this kind started the process (mpi4py then sees the
        launcher's world)."""
        return False

    @staticmethod
    def check_mpi_world(env: Mapping[str, str], size: int | None) -> None:
        """Raise when the MPI world mpi4py sees (``size``; None: mpi4py does not import) cannot
        be this launcher's (a rank would believe it is alone and do all the work)."""

    @staticmethod
    def array_index(env: Mapping[str, str]) -> int | None:
        """The array index from 0 this scheduler gives a task (None: not an array task)."""
        return None

    @staticmethod
    def cpus(env: Mapping[str, str]) -> int | None:
        """The CPUs this scheduler or launcher grants the task (None: it says nothing)."""
        return None


def env_int(env: Mapping[str, str], name: str) -> int:
    """A variable that may be unset or empty (0 then)."""
    return int(env.get(name, "0") or 0)


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (the whole machine where there is none)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
