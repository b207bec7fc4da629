"""Inside a Slurm job: the array index, the CPU grant, and an srun task's rank and sizes."""

from __future__ import annotations

from collections.abc import Mapping

from ...ports import master_port
from ..base import DistInfo, JobEnvironment, env_int, need, need_int


class SlurmEnvironment(JobEnvironment):
    name = "slurm"
    hint = (
        "the xvhpc Slurm script exports it; by hand: export MASTER_ADDR=$(scontrol show hostnames "
        '"$SLURM_JOB_NODELIST" | head -n1)'
    )
    rank_variables = ("SLURM_PROCID", "SLURM_LOCALID")

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return "SLURM_PROCID" in env and "SLURM_STEP_ID" in env and "SLURM_NTASKS" in env

    @classmethod
    def launch_rank(cls, env: Mapping[str, str]) -> tuple[int, int] | None:
        """Only inside srun (a job step): the batch script itself also has SLURM_PROCID."""
        return super().launch_rank(env) if "SLURM_STEP_ID" in env else None

    def info(self, env: Mapping[str, str]) -> DistInfo:
        i = lambda k: need_int(env, k, self.name, self.hint)  # noqa: E731
        size = i("SLURM_NTASKS")
        addr = (
            need(env, "MASTER_ADDR", self.name, self.hint)
            if size > 1
            else env.get("MASTER_ADDR", "127.0.0.1")
        )
        port = int(env.get("MASTER_PORT") or master_port(env_int(env, "SLURM_JOB_ID")))
        return DistInfo(self.name, i("SLURM_PROCID"), i("SLURM_LOCALID"), size, addr, port)

    @staticmethod
    def array_index(env: Mapping[str, str]) -> int | None:
        """Slurm counts from 0."""
        value = env.get("SLURM_ARRAY_TASK_ID", "")
        return int(value) if value.isdigit() else None

    @staticmethod
    def cpus(env: Mapping[str, str]) -> int | None:
        value = env.get("SLURM_CPUS_PER_TASK", "")
        return int(value) if value.isdigit() else None
