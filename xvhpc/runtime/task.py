"""Inside a batch task that is not a training rank (ingest): its array index, its CPU grant and
its MPI rank, read from the scheduler's and launcher's variables in one place.

Steps ask ``detect_task()`` instead of reading ``SLURM_*``/``LSB_*`` themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .environments import EnvironmentError_

MPI_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "JSM_NAMESPACE_SIZE")


@dataclass(frozen=True)
class Task:
    """Who this task is: array index (None outside an array), CPUs it may use, MPI rank/size
    (0 and 1 without an MPI launcher or mpi4py) and the communicator (None then)."""

    array_index: int | None
    cpus: int
    mpi_rank: int = 0
    mpi_size: int = 1
    comm: Any = None


def array_index(env: Mapping[str, str]) -> int | None:
    """Array index from the scheduler: Slurm counts from 0, LSF from 1 (a value that is not a
    number, which no scheduler sets, counts as no array)."""
    slurm, lsf = env.get("SLURM_ARRAY_TASK_ID", ""), env.get("LSB_JOBINDEX", "0")
    if slurm.isdigit():
        return int(slurm)
    if lsf.isdigit() and int(lsf) > 0:
        return int(lsf) - 1
    return None


def allocated_cpus(env: Mapping[str, str]) -> int:
    """CPUs this task may use: the scheduler's grant, else the affinity mask (not the whole node).
    A jsrun rank's grant is its resource set, which only the affinity mask tells (LSF's
    LSB_DJOB_NUMPROC counts the whole job)."""
    if "JSM_NAMESPACE_RANK" in env and hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    for key in ("SLURM_CPUS_PER_TASK", "LSB_DJOB_NUMPROC"):
        if env.get(key, "").isdigit():
            return int(env[key])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def mpi_world(env: Mapping[str, str]) -> tuple[int, int, Any]:
    """(rank, size, comm) under an MPI launcher with mpi4py, else (0, 1, None). Under jsrun
    mpi4py is required and must see the launcher's world: without it every rank would believe
    it is rank 0 of 1 and do all the work (issue 22 N2)."""
    if not any(k in env for k in MPI_VARIABLES):
        return 0, 1, None
    try:
        from mpi4py import MPI
    except ImportError:
        if "JSM_NAMESPACE_SIZE" in env:
            raise mpi4py_needed("mpi4py does not import") from None
        return 0, 1, None
    comm = MPI.COMM_WORLD
    check_mpi_size(env, comm.Get_size())
    return comm.Get_rank(), comm.Get_size(), comm


def mpi4py_needed(what: str) -> EnvironmentError_:
    return EnvironmentError_(
        f"jsrun: {what}, so the ranks cannot tell each other apart. HINT: install mpi4py "
        'against the site\'s MPI (MPICC="mpicc -shared" pip install --no-binary=mpi4py mpi4py; '
        "envs/opence.sh does) in the env.python environment"
    )


def check_mpi_size(env: Mapping[str, str], size: int) -> None:
    """An mpi4py built against another MPI starts a world of 1 under jsrun: a clear error."""
    launcher = env.get("JSM_NAMESPACE_SIZE", "")
    if launcher.isdigit() and int(launcher) != size:
        raise mpi4py_needed(
            f"mpi4py sees {size} rank(s) but JSM_NAMESPACE_SIZE={launcher} (built against "
            "another MPI than the launcher's?)"
        )


# (rank, local rank) variables of each launcher, in the environments' detection order
RANK_VARIABLES = (
    ("RANK", "LOCAL_RANK"),
    ("JSM_NAMESPACE_RANK", "JSM_NAMESPACE_LOCAL_RANK"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("SLURM_PROCID", "SLURM_LOCALID"),
)


def launcher_rank(env: Mapping[str, str]) -> tuple[int, int]:
    """(rank, local rank) as the launcher numbers this process, (0, 0) outside one: for ranks
    that work alone (one predict chunk per GPU) and need no rendezvous address."""
    for rank, local in RANK_VARIABLES:
        if env.get(rank, "").isdigit():
            value = env.get(local, "0")
            return int(env[rank]), int(value) if value.isdigit() else 0
    return 0, 0


def detect_task(env: Mapping[str, str] | None = None) -> Task:
    """This task's array index, CPU grant and MPI rank (``env`` defaults to os.environ)."""
    env = os.environ if env is None else env
    rank, size, comm = mpi_world(env)
    return Task(array_index(env), allocated_cpus(env), rank, size, comm)
