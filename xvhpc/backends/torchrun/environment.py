"""Inside torchrun: RANK, LOCAL_RANK, WORLD_SIZE and MASTER_ADDR/PORT, set by its agent."""

from __future__ import annotations

from collections.abc import Mapping

from ..base import DistInfo, JobEnvironment, need, need_int


class TorchrunEnvironment(JobEnvironment):
    name = "torchrun"
    hint = "launch with `torchrun --nproc-per-node=N -m xvhpc train ...`, which sets it"
    rank_variables = ("RANK", "LOCAL_RANK")

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return "TORCHELASTIC_RUN_ID" in env or all(
            k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        )

    def info(self, env: Mapping[str, str]) -> DistInfo:
        i = lambda k: need_int(env, k, self.name, self.hint)  # noqa: E731
        return DistInfo(
            self.name,
            i("RANK"),
            i("LOCAL_RANK"),
            i("WORLD_SIZE"),
            need(env, "MASTER_ADDR", self.name, self.hint),
            i("MASTER_PORT"),
        )
