"""IBM LSF (Summit): #BSUB directives, done() dependencies, job arrays, brequeue."""

from __future__ import annotations

import math
import re

from ..plan.model import Plan, Step
from ..spec import SiteConfig
from ..util import parse_walltime
from .base import SCHEDULERS, Scheduler

_SIGNALS = {"USR1": "USR1", "USR2": "USR2", "TERM": "TERM"}


@SCHEDULERS.register("lsf")
class LsfScheduler(Scheduler):
    suffix = ".lsf"
    needs = ("bsub", "bjobs", "bkill")

    def directives(self, step: Step, plan: Plan, site: SiteConfig) -> list[str]:
        minutes = math.ceil(parse_walltime(step.walltime) / 60)
        name = f"{plan.job_label}-{step.name}"
        if step.array and not step.packed:
            limit = f"%{step.max_concurrent}" if step.max_concurrent else ""
            name = f"{name}[1-{step.array}]{limit}"
        suffix = ".%J.%I" if step.array and not step.packed else ".%J"
        d = [
            f'#BSUB -J "{name}"',
            f"#BSUB -W {minutes // 60}:{minutes % 60:02d}",
            f"#BSUB -nnodes {step.allocation_nodes}",
            f"#BSUB -o logs/{step.name}{suffix}.out",
            f"#BSUB -e logs/{step.name}{suffix}.err",
        ]
        account = plan.account
        queue = plan.queue
        if account:
            d.append(f"#BSUB -P {account}")
        if queue:
            d.append(f"#BSUB -q {queue}")
        if site.alloc_flags:
            d.append(f'#BSUB -alloc_flags "{site.alloc_flags}"')
        if step.requeue:
            warn_min = max(1, math.ceil(site.requeue.seconds_before / 60))
            d.append(f"#BSUB -wa {_SIGNALS[site.requeue.signal]}")
            d.append(f"#BSUB -wt {warn_min}")
            d.append("#BSUB -r")
        d += [f"#BSUB {x}" for x in site.extra_directives]
        return sorted(d)

    def prologue(self, step: Step, site: SiteConfig) -> list[str]:
        lines = []
        if step.array and not step.packed:
            lines.append("XVHPC_INDEX=$(( ${LSB_JOBINDEX:-1} - 1 ))  # LSF arrays count from 1")
        if step.distributed:
            lines += [
                "# rank 0's host comes from LSB_DJOB_RANKFILE (launch node dropped) or mpi4py",
                "export MASTER_PORT=$((15000 + ${LSB_JOBID:-0} % 20000))",
            ]
        return lines

    def requeue_command(self) -> str:
        return 'brequeue "${LSB_JOBID}${LSB_JOBINDEX:+[$LSB_JOBINDEX]}"'

    def submit_argv(self, script: str, after: list[str]) -> tuple[list[str], bool]:
        argv = ["bsub"]
        if after:
            argv += ["-w", " && ".join(f"done({j})" for j in after)]
        return argv, True

    def parse_job_id(self, stdout: str) -> str:
        match = re.search(r"Job <(\d+)> is submitted", stdout)
        if not match:
            raise ValueError(f"bsub printed no job id: {stdout!r}")
        return match.group(1)
