"""Inside an MPI launcher: Open MPI's OMPI_COMM_WORLD_* (rank 0's address through mpi4py), and
the bare PMI ranks of the others (srun --mpi=pmix, MPICH/Intel MPI's hydra)."""

from __future__ import annotations

from collections.abc import Mapping

from ...ports import master_port
from ..base import DistInfo, JobEnvironment, env_int, mpi_rank0_address, need, need_int


class OpenMPIEnvironment(JobEnvironment):
    name = "openmpi"
    hint = (
        "run under `mpirun -np N` (Open MPI) and install mpi4py, or export MASTER_ADDR/MASTER_PORT"
    )
    rank_variables = ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK")

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return "OMPI_COMM_WORLD_RANK" in env

    @staticmethod
    def mpi_launched(env: Mapping[str, str]) -> bool:
        return "OMPI_COMM_WORLD_SIZE" in env

    def info(self, env: Mapping[str, str]) -> DistInfo:
        i = lambda k: need_int(env, k, self.name, self.hint)  # noqa: E731
        rank, local, size = (
            i("OMPI_COMM_WORLD_RANK"),
            i("OMPI_COMM_WORLD_LOCAL_RANK"),
            i("OMPI_COMM_WORLD_SIZE"),
        )
        port = env_int(env, "MASTER_PORT") or master_port(env_int(env, "SLURM_JOB_ID"))
        addr = env.get("MASTER_ADDR", "")
        if not addr and size > 1:
            try:
                addr, port = mpi_rank0_address(port)
            except ImportError:
                need(env, "MASTER_ADDR", self.name, self.hint)
        return DistInfo(self.name, rank, local, size, addr or "127.0.0.1", port)


class PmiEnvironment(JobEnvironment):
    """PMI's rank variables, which other MPI launchers set: enough to know this process's rank
    (only rank 0 locks), never trusted for a rendezvous (no size or address xvhpc relies on)."""

    name = "pmi"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return False  # ranks only: training under a bare PMI launcher is not supported

    @classmethod
    def launch_rank(cls, env: Mapping[str, str]) -> tuple[int, int] | None:
        for name in ("PMIX_RANK", "PMI_RANK"):
            if env.get(name, "").isdigit():
                return int(env[name]), 0
        return None

    @staticmethod
    def mpi_launched(env: Mapping[str, str]) -> bool:
        return "PMI_SIZE" in env or "PMIX_RANK" in env
