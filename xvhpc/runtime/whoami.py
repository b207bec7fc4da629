"""Who am I in the job? Asks the backends' job environments (one small class each, Lightning's
shape, in ``xvhpc/backends/<name>/environment.py``): rank, local rank, world size, rendezvous
address, and for a batch task that is not a training rank (ingest) its array index, CPU grant
and MPI world. Stdlib only: every training rank imports it.

Steps ask here instead of reading ``SLURM_*``/``LSB_*``/``OMPI_*`` themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..backends.base import DistInfo, JobEnvironment, affinity_cpus
from ..backends.local.environment import SingleProcessEnvironment
from ..backends.lsf.environment import JsrunEnvironment
from ..backends.mpi.environment import OpenMPIEnvironment, PmiEnvironment
from ..backends.slurm.environment import SlurmEnvironment
from ..backends.torchrun.environment import TorchrunEnvironment

# Detection order (first match wins), and why; the rank, array-index and CPU questions walk the
# same list, so there is one list of launcher variables (a new backend adds one line here):
#   1. torchrun    — sets RANK/WORLD_SIZE explicitly and may itself run under Slurm or LSF.
#   2. jsrun (LSF) — JSM_NAMESPACE_*; jsrun also sets OMPI_* (Spectrum MPI), so before Open MPI.
#   3. Open MPI    — OMPI_COMM_WORLD_*; mpirun inside a Slurm allocation also has SLURM_*.
#   4. Slurm srun  — SLURM_PROCID inside a job step (SLURM_STEP_ID set).
#   5. bare PMI    — PMIX_RANK/PMI_RANK of other MPI launchers: a rank, never a rendezvous.
#   6. single process.
DETECTION_ORDER: tuple[type[JobEnvironment], ...] = (
    TorchrunEnvironment,
    JsrunEnvironment,
    OpenMPIEnvironment,
    SlurmEnvironment,
    PmiEnvironment,
    SingleProcessEnvironment,
)


def detect_environment(env: Mapping[str, str] | None = None) -> DistInfo:
    """Rank, local rank, world size and rendezvous address of this process."""
    env = os.environ if env is None else env
    for cls in DETECTION_ORDER:
        if cls.detect(env):
            return cls().info(env)
    raise AssertionError("unreachable: the single-process environment always matches")


def launcher_rank(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(rank, local rank) as the launcher numbers this process, (0, 0) outside one: read from
    the environment only, before any process group exists (only rank 0 takes a lock; ranks
    that work alone, one predict chunk per GPU, need no rendezvous address)."""
    env = os.environ if env is None else env
    for cls in DETECTION_ORDER:
        found = cls.launch_rank(env)
        if found is not None:
            return found
    return 0, 0


@dataclass(frozen=True)
class BatchTask:
    """Who this batch task is: array index (None outside an array), CPUs it may use, MPI
    rank/size (0 and 1 without an MPI launcher or mpi4py) and the communicator (None then)."""

    array_index: int | None
    cpus: int
    mpi_rank: int = 0
    mpi_size: int = 1
    comm: Any = None


def array_index(env: Mapping[str, str]) -> int | None:
    """Array index from 0, from the scheduler (a value that is not a number, which no scheduler
    sets, counts as no array)."""
    return next((i for c in DETECTION_ORDER if (i := c.array_index(env)) is not None), None)


def allocated_cpus(env: Mapping[str, str]) -> int:
    """CPUs this task may use: the scheduler's or launcher's grant, else the affinity mask (not
    the whole node)."""
    return next((n for c in DETECTION_ORDER if (n := c.cpus(env)) is not None), affinity_cpus())


def mpi_world(env: Mapping[str, str]) -> tuple[int, int, Any]:
    """(rank, size, comm) under an MPI launcher with mpi4py, else (0, 1, None); a launcher
    that needs mpi4py (jsrun) says so clearly when it is missing or sees another world."""
    if not any(c.mpi_launched(env) for c in DETECTION_ORDER):
        return 0, 1, None
    try:
        from mpi4py import MPI
    except ImportError:
        for cls in DETECTION_ORDER:
            cls.check_mpi_world(env, None)
        return 0, 1, None
    comm = MPI.COMM_WORLD
    for cls in DETECTION_ORDER:
        cls.check_mpi_world(env, comm.Get_size())
    return comm.Get_rank(), comm.Get_size(), comm


def batch_task(env: Mapping[str, str] | None = None) -> BatchTask:
    """This batch task's array index, CPU grant and MPI rank (``env`` defaults to os.environ)."""
    env = os.environ if env is None else env
    rank, size, comm = mpi_world(env)
    return BatchTask(array_index(env), allocated_cpus(env), rank, size, comm)
