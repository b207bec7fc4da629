"""Inside an LSF job: the array index and CPU grant (LSB_*), and a jsrun rank (JSM_NAMESPACE_*),
whose rank 0 shares its address through mpi4py."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ...ports import master_port
from ..base import (
    DistInfo,
    EnvironmentError_,
    JobEnvironment,
    affinity_cpus,
    env_int,
    mpi_rank0_address,
    need_int,
)


def mpi4py_needed(what: str) -> EnvironmentError_:
    return EnvironmentError_(
        f"jsrun: {what}, so the ranks cannot tell each other apart. HINT: install mpi4py "
        'against the site\'s MPI (MPICC="mpicc -shared" pip install --no-binary=mpi4py mpi4py; '
        "envs/opence.sh does) in the env.python environment"
    )


class JsrunEnvironment(JobEnvironment):
    name = "jsrun"
    hint = "run under `jsrun` inside an LSF allocation (the xvhpc LSF script does)"
    rank_variables = ("JSM_NAMESPACE_RANK", "JSM_NAMESPACE_LOCAL_RANK")

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
        i = lambda k: need_int(env, k, self.name, self.hint)  # noqa: E731
        rank, size = i("JSM_NAMESPACE_RANK"), i("JSM_NAMESPACE_SIZE")
        local = int(env.get("JSM_NAMESPACE_LOCAL_RANK", env.get("OMPI_COMM_WORLD_LOCAL_RANK", "0")))
        port = int(env.get("MASTER_PORT") or master_port(env_int(env, "LSB_JOBID")))
        addr = env.get("MASTER_ADDR", "")
        if not addr and size > 1:
            # rank 0's own address: right even for sweep points packed into one allocation (the
            # rank file's first host is not: every packed point would wait on node 1)
            try:
                addr, port = mpi_rank0_address(port, size)
            except ImportError:
                raise EnvironmentError_(
                    "jsrun: mpi4py does not import, so rank 0's address cannot be shared. HINT: "
                    'install mpi4py against the site\'s MPI (MPICC="mpicc -shared" pip install '
                    "--no-binary=mpi4py mpi4py; envs/opence.sh does), or export MASTER_ADDR"
                ) from None
        return DistInfo(self.name, rank, local, size, addr or "127.0.0.1", port)

    @staticmethod
    def mpi_launched(env: Mapping[str, str]) -> bool:
        return "JSM_NAMESPACE_SIZE" in env

    @staticmethod
    def check_mpi_world(env: Mapping[str, str], size: int | None) -> None:
        """Under jsrun mpi4py is required and must see the launcher's world: an mpi4py built
        against another MPI starts a world of 1, and every rank would do all the work (issue
        22 N2)."""
        if "JSM_NAMESPACE_SIZE" not in env:
            return
        if size is None:
            raise mpi4py_needed("mpi4py does not import")
        launcher = env.get("JSM_NAMESPACE_SIZE", "")
        if launcher.isdigit() and int(launcher) != size:
            raise mpi4py_needed(
                f"mpi4py sees {size} rank(s) but JSM_NAMESPACE_SIZE={launcher} (built against "
                "another MPI than the launcher's?)"
            )

    @staticmethod
    def array_index(env: Mapping[str, str]) -> int | None:
        """LSF counts from 1 (0: not an array job)."""
        value = env.get("LSB_JOBINDEX", "0")
        return int(value) - 1 if value.isdigit() and int(value) > 0 else None

    @staticmethod
    def cpus(env: Mapping[str, str]) -> int | None:
        """A jsrun rank's grant is its resource set, which only the affinity mask tells (LSF's
        LSB_DJOB_NUMPROC counts the whole job)."""
        if "JSM_NAMESPACE_RANK" in env and hasattr(os, "sched_getaffinity"):
            return affinity_cpus()
        value = env.get("LSB_DJOB_NUMPROC", "")
        return int(value) if value.isdigit() else None
