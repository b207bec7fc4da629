"""torchrun: one agent per node spawns the local ranks (standalone on one node)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import LAUNCHERS, Launcher, Shell

if TYPE_CHECKING:
    from ...plan.step import Step
    from ...spec import SiteConfig


@LAUNCHERS.register("torchrun")
class TorchrunLauncher(Launcher):
    spawns_ranks = True

    def command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        python, _m, _module, *rest = argv  # argv is [python, -m, xvhpc, ...]
        head = [python, "-m", "torch.distributed.run", f"--nproc-per-node={step.tasks_per_node}"]
        if step.nodes == 1:
            head.append("--standalone")
        else:
            head += [
                f"--nnodes={step.nodes}",
                "--rdzv-backend=c10d",
                Shell('--rdzv-endpoint="${MASTER_ADDR}:${MASTER_PORT}"'),
            ]
        return [*head, "-m", "xvhpc", *rest]
