"""jsrun (IBM JSM, Summit): every step runs through it, on compute nodes, never the launch node.

Layouts (OLCF Summit guide): ``all_gpus_per_rank`` is one resource set per node holding every
GPU (``-r1 -g6 -a6 -c42 -bpacked:7``): ranks pick a GPU by local rank and CUDA IPC/NVLink work
between the ranks of a node; ``rank_per_gpu`` isolates one GPU per resource set (cgroups block
CUDA IPC). ``--smpiargs=-disable_gpu_hooks`` because xvhpc is not a CUDA-aware Spectrum MPI
program (else the PAMI CUDA hook error); MPI itself stays on for mpi4py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import LAUNCHERS, Launcher
from .options import JsrunOptions

if TYPE_CHECKING:
    from ...plan.step import Step
    from ...spec import SiteConfig

SMPIARGS = "--smpiargs=-disable_gpu_hooks"
CORES_PER_INGEST_RANK = 7  # one rank per 7 cores: Summit's 42 usable cores give 6 ranks/node


@LAUNCHERS.register("jsrun")
class JsrunLauncher(Launcher):
    needs = ("jsrun",)
    mpi_ingest = True
    options = JsrunOptions

    def command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        per_node = step.tasks_per_node
        gpus = step.gpus_per_node
        cores = site.node.cores
        per_rank = max(1, cores // per_node)
        if site.options("launcher").mode == "all_gpus_per_rank" and gpus:
            head = [
                "jsrun",
                f"-n{step.nodes}",
                "-r1",
                f"-a{per_node}",
                f"-g{gpus}",
                f"-c{cores}",
                f"-bpacked:{per_rank}",
            ]
        else:
            head = [
                "jsrun",
                f"-n{step.nodes * per_node}",
                f"-r{per_node}",
                "-a1",
                f"-g{1 if gpus else 0}",
                f"-c{per_rank}",
                f"-bpacked:{per_rank}",
            ]
        return [*head, SMPIARGS, *argv]

    def single_command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        cores = site.node.cores
        gpus = 1 if step.gpus_per_node else 0
        return [
            "jsrun",
            "-n1",
            "-r1",
            "-a1",
            f"-g{gpus}",
            f"-c{cores}",
            f"-bpacked:{cores}",
            SMPIARGS,
            *argv,
        ]

    def per_node_command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        return ["jsrun", f"-n{step.nodes}", "-r1", "-a1", "-c1", "-g0", SMPIARGS, *argv]

    def ingest_ranks_per_node(self, site: SiteConfig) -> int:
        return max(1, site.node.cores // CORES_PER_INGEST_RANK)
