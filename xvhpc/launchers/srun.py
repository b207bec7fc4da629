"""srun: one task per rank inside the Slurm allocation."""

from ..plan.model import Step
from ..spec import SiteConfig
from .base import LAUNCHERS, Launcher


@LAUNCHERS.register("srun")
class SrunLauncher(Launcher):
    needs = ("srun",)

    def command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        head = [
            "srun",
            f"--nodes={step.nodes}",
            f"--ntasks-per-node={step.tasks_per_node}",
            f"--ntasks={step.nodes * step.tasks_per_node}",
            f"--cpus-per-task={step.cpus_per_task * site.node.smt}",
            "--kill-on-bad-exit=1",
        ]
        if step.gpus_per_node:
            # one GPU per task, bound by Slurm: no task lands on GPU 0 by accident
            head.append("--gpus-per-task=1")
        if site.srun_mpi:
            head.append(f"--mpi={site.srun_mpi}")
        return [*head, *argv]

    def per_node_command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        n = step.nodes
        return ["srun", f"--nodes={n}", "--ntasks-per-node=1", f"--ntasks={n}", *argv]
