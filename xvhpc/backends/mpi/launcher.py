"""mpirun (Open MPI): ranks placed per node; rank 0's address is shared through mpi4py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import LAUNCHERS, Launcher, Shell

if TYPE_CHECKING:
    from ...plan.step import Step
    from ...spec import SiteConfig

HOSTFILE = Shell('${LSB_DJOB_HOSTFILE:+--hostfile "$LSB_DJOB_HOSTFILE"}')


@LAUNCHERS.register("mpirun")
class MpirunLauncher(Launcher):
    needs = ("mpirun",)

    def command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        return [
            "mpirun",
            "-np",
            str(step.nodes * step.tasks_per_node),
            "--map-by",
            f"ppr:{step.tasks_per_node}:node",
            "--bind-to",
            "none",
            # LSF's host list where the job has one (an Open MPI without LSF support would put
            # every rank on the first host); Slurm allocations are read by Open MPI itself
            HOSTFILE,
            *argv,
        ]

    def per_node_command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        return ["mpirun", "-np", str(step.nodes), "--map-by", "ppr:1:node", HOSTFILE, *argv]
