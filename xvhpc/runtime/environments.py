"""Who am I in the job? One small class per launcher environment (Lightning's shape).

Detection order (first match wins), and why:
  1. torchrun    — sets RANK/WORLD_SIZE explicitly and may itself run under Slurm or LSF.
  2. jsrun (LSF) — JSM_NAMESPACE_*; jsrun also sets OMPI_* (Spectrum MPI), so before Open MPI.
  3. Open MPI    — OMPI_COMM_WORLD_*; mpirun inside a Slurm allocation also has SLURM_*.
  4. Slurm srun  — SLURM_PROCID inside a job step (SLURM_STEP_ID set).
  5. single process.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from ..ports import master_port
from ..util import UserError


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


def _need(env: Mapping[str, str], name: str, who: str, hint: str) -> str:
    if name not in env or env[name] == "":
        raise EnvironmentError_(f"{who}: environment variable {name} is not set. HINT: {hint}")
    return env[name]


def _int(env: Mapping[str, str], name: str, who: str, hint: str) -> int:
    value = _need(env, name, who, hint)
    try:
        return int(value)
    except ValueError:
        raise EnvironmentError_(
            f"{who}: {name}={value!r} is not an integer. HINT: {hint}"
        ) from None


def _mpi_rank0_address(port_hint: int, expected_size: int | None = None) -> tuple[str, int]:
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


class ClusterEnvironment:
    name: ClassVar[str]
    hint: ClassVar[str] = ""

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        raise NotImplementedError

    def info(self, env: Mapping[str, str]) -> DistInfo:
        raise NotImplementedError


class TorchrunEnvironment(ClusterEnvironment):
    name = "torchrun"
    hint = "launch with `torchrun --nproc-per-node=N -m xvhpc train ...`, which sets it"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return "TORCHELASTIC_RUN_ID" in env or all(
            k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        )

    def info(self, env: Mapping[str, str]) -> DistInfo:
        i = lambda k: _int(env, k, self.name, self.hint)  # noqa: E731
        return DistInfo(
            self.name,
            i("RANK"),
            i("LOCAL_RANK"),
            i("WORLD_SIZE"),
            _need(env, "MASTER_ADDR", self.name, self.hint),
            i("MASTER_PORT"),
        )


class JsrunEnvironment(ClusterEnvironment):
    name = "jsrun"
    hint = "run under `jsrun` inside an LSF allocation (the xvhpc LSF script does)"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return "JSM_NAMESPACE_RANK" in env

    @staticmethod
    def first_compute_host(env: Mapping[str, str]) -> str:
        """First host in LSB_DJOB_RANKFILE (or HOSTFILE) after the launch node on line 1."""
        for key in ("LSB_DJOB_RANKFILE", "LSB_DJOB_HOSTFILE"):
            path = env.get(key)
            if path and os.path.isfile(path):
                hosts = [h.strip() for h in open(path) if h.strip()]
                if len(hosts) > 1:
                    return hosts[1]
                if hosts:
                    return hosts[0]
        raise EnvironmentError_(
            "jsrun: neither MASTER_ADDR nor a readable LSB_DJOB_RANKFILE/LSB_DJOB_HOSTFILE is set. "
            "HINT: run inside an LSF job, or export MASTER_ADDR"
        )

    def info(self, env: Mapping[str, str]) -> DistInfo:
        i = lambda k: _int(env, k, self.name, self.hint)  # noqa: E731
        rank, size = i("JSM_NAMESPACE_RANK"), i("JSM_NAMESPACE_SIZE")
        local = int(env.get("JSM_NAMESPACE_LOCAL_RANK", env.get("OMPI_COMM_WORLD_LOCAL_RANK", "0")))
        port = int(env.get("MASTER_PORT") or master_port(int(env.get("LSB_JOBID", "0") or 0)))
        addr = env.get("MASTER_ADDR", "")
        if not addr and size > 1:
            # rank 0's own address: right even for sweep points packed into one allocation (the
            # rank file's first host is not: every packed point would wait on node 1)
            try:
                addr, port = _mpi_rank0_address(port, size)
            except ImportError:
                raise EnvironmentError_(
                    "jsrun: mpi4py does not import, so rank 0's address cannot be shared. HINT: "
                    'install mpi4py against the site\'s MPI (MPICC="mpicc -shared" pip install '
                    "--no-binary=mpi4py mpi4py; envs/opence.sh does), or export MASTER_ADDR"
                ) from None
        return DistInfo(self.name, rank, local, size, addr or "127.0.0.1", port)


class OpenMPIEnvironment(ClusterEnvironment):
    name = "openmpi"
    hint = (
        "run under `mpirun -np N` (Open MPI) and install mpi4py, or export MASTER_ADDR/MASTER_PORT"
    )

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return "OMPI_COMM_WORLD_RANK" in env

    def info(self, env: Mapping[str, str]) -> DistInfo:
        i = lambda k: _int(env, k, self.name, self.hint)  # noqa: E731
        rank, local, size = (
            i("OMPI_COMM_WORLD_RANK"),
            i("OMPI_COMM_WORLD_LOCAL_RANK"),
            i("OMPI_COMM_WORLD_SIZE"),
        )
        port = int(env.get("MASTER_PORT", "0") or 0) or master_port(
            int(env.get("SLURM_JOB_ID", "0") or 0)
        )
        addr = env.get("MASTER_ADDR", "")
        if not addr and size > 1:
            try:
                addr, port = _mpi_rank0_address(port)
            except ImportError:
                _need(env, "MASTER_ADDR", self.name, self.hint)
        return DistInfo(self.name, rank, local, size, addr or "127.0.0.1", port)


class SlurmEnvironment(ClusterEnvironment):
    name = "slurm"
    hint = (
        "the xvhpc Slurm script exports it; by hand: export MASTER_ADDR=$(scontrol show hostnames "
        '"$SLURM_JOB_NODELIST" | head -n1)'
    )

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return "SLURM_PROCID" in env and "SLURM_STEP_ID" in env and "SLURM_NTASKS" in env

    def info(self, env: Mapping[str, str]) -> DistInfo:
        i = lambda k: _int(env, k, self.name, self.hint)  # noqa: E731
        size = i("SLURM_NTASKS")
        addr = (
            _need(env, "MASTER_ADDR", self.name, self.hint)
            if size > 1
            else env.get("MASTER_ADDR", "127.0.0.1")
        )
        port = int(env.get("MASTER_PORT") or master_port(int(env.get("SLURM_JOB_ID", "0") or 0)))
        return DistInfo(self.name, i("SLURM_PROCID"), i("SLURM_LOCALID"), size, addr, port)


class SingleProcessEnvironment(ClusterEnvironment):
    name = "single"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return True

    def info(self, env: Mapping[str, str]) -> DistInfo:
        return DistInfo(self.name, 0, 0, 1, "127.0.0.1", 0)


DETECTION_ORDER: tuple[type[ClusterEnvironment], ...] = (
    TorchrunEnvironment,
    JsrunEnvironment,
    OpenMPIEnvironment,
    SlurmEnvironment,
    SingleProcessEnvironment,
)


def detect_environment(env: Mapping[str, str] | None = None) -> DistInfo:
    """Rank, local rank, world size and rendezvous address of this process."""
    env = os.environ if env is None else env
    for cls in DETECTION_ORDER:
        if cls.detect(env):
            return cls().info(env)
    raise AssertionError("unreachable: the single-process environment always matches")
