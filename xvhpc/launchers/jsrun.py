"""jsrun (IBM JSM, Summit): one rank per GPU resource set, or all GPUs per rank set."""

from ..plan.model import Step
from ..spec import SiteConfig
from .base import LAUNCHERS, Launcher


@LAUNCHERS.register("jsrun")
class JsrunLauncher(Launcher):
    needs = ("jsrun",)

    def command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        per_node = step.tasks_per_node
        gpus = step.gpus_per_node
        cores = site.node.cores
        if site.jsrun_mode == "all_gpus_per_rank" and gpus:
            # one resource set per node holding every GPU; ranks pick a GPU by local rank
            per_rank = max(1, cores // per_node)
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
            per_rank = max(1, cores // per_node)
            head = [
                "jsrun",
                f"-n{step.nodes * per_node}",
                f"-r{per_node}",
                "-a1",
                f"-g{1 if gpus else 0}",
                f"-c{per_rank}",
                f"-bpacked:{per_rank}",
            ]
        return [*head, *argv]
