"""mpirun (Open MPI): ranks placed per node; rank 0's address is shared through mpi4py."""

from ..plan.model import Step
from ..spec import SiteConfig
from .base import LAUNCHERS, Launcher


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
            *argv,
        ]

    def per_node_command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        return ["mpirun", "-np", str(step.nodes), "--map-by", "ppr:1:node", *argv]
