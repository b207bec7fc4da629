"""srun: one task per rank inside the Slurm allocation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import LAUNCHERS, Launcher
from .options import SrunOptions

if TYPE_CHECKING:
    from ...plan.step import Step
    from ...spec import SiteConfig


@LAUNCHERS.register("srun")
class SrunLauncher(Launcher):
    needs = ("srun",)
    runs_pyxis = True
    options = SrunOptions

    def command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        head = [
            "srun",
            f"--nodes={step.nodes}",
            f"--ntasks-per-node={step.tasks_per_node}",
            f"--ntasks={step.nodes * step.tasks_per_node}",
            f"--cpus-per-task={step.cpus_per_task * site.node.smt}",
            "--kill-on-bad-exit=1",
        ]
        # GPUs come from the job's per-node request (--gpus-per-node or --gres), never per task:
        # --gpus-per-task implies --gpu-bind=per_task, a cgroup per task that blocks CUDA IPC
        # between a node's ranks; each rank picks its GPU from what it sees (runtime/placement.py)
        options: SrunOptions = site.options("launcher")
        bind = options.binding
        if step.gpus_per_node and bind.gpu:
            head.append(f"--gpu-bind={bind.gpu}")
        if bind.cpu:
            head.append(f"--cpu-bind={bind.cpu}")
        if bind.threads_per_core:
            head.append(f"--threads-per-core={bind.threads_per_core}")
        if options.mpi or step.mpi:  # Horovod is an MPI program: PMIx wires its ranks
            head.append(f"--mpi={options.mpi or 'pmix'}")

        return [*head, *argv]

    def per_node_command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        n = step.nodes
        return ["srun", f"--nodes={n}", "--ntasks-per-node=1", f"--ntasks={n}", *argv]
