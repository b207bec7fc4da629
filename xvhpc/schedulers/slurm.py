"""Slurm: #SBATCH directives, afterok dependencies, job arrays, signal + requeue."""

from __future__ import annotations

from ..plan.model import Plan, Step
from ..spec import SiteConfig
from .base import SCHEDULERS, Scheduler


@SCHEDULERS.register("slurm")
class SlurmScheduler(Scheduler):
    suffix = ".sbatch"
    needs = ("sbatch", "squeue", "sacct", "scancel")

    def directives(self, step: Step, plan: Plan, site: SiteConfig) -> list[str]:
        out = (
            f"logs/{step.name}-%A_%a.out"
            if step.array and not step.packed
            else f"logs/{step.name}-%j.out"
        )
        d = {
            "--job-name": f"{plan.job_label}-{step.name}",
            "--output": out,
            "--nodes": str(step.allocation_nodes),
            "--time": step.walltime,
            "--cpus-per-task": str(step.cpus_per_task),
            "--open-mode": "append",
            "--export": "ALL",
        }
        if step.distributed:
            d["--ntasks-per-node"] = str(step.tasks_per_node)
        else:
            d["--ntasks"] = "1"
        if step.gpus_per_node:
            if site.gpu_request == "gres":
                d["--gres"] = f"gpu:{step.gpus_per_node}"
            else:
                d["--gpus-per-node"] = str(step.gpus_per_node)
        queue = plan.queue
        account = plan.account
        if queue:
            d["--partition"] = queue
        if account:
            d["--account"] = account
        if step.array and not step.packed:
            limit = f"%{step.max_concurrent}" if step.max_concurrent else ""
            d["--array"] = f"0-{step.array - 1}{limit}"
        lines = [f"#SBATCH {k}={v}" for k, v in d.items()]
        if step.requeue:
            lines.append(f"#SBATCH --signal=B:{site.requeue.signal}@{site.requeue.seconds_before}")
            lines.append("#SBATCH --requeue")
        lines += [f"#SBATCH {x}" for x in site.extra_directives]
        return sorted(lines)

    def prologue(self, step: Step, site: SiteConfig) -> list[str]:
        lines = []
        if step.array and not step.packed:
            lines.append('XVHPC_INDEX="${SLURM_ARRAY_TASK_ID:-0}"')
        if step.distributed:
            lines += [
                "# rank 0 runs on the first node of the allocation; NodeAddr is what ranks can reach",
                'first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                "MASTER_ADDR=$(scontrol show node \"$first_node\" | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p')",
                'export MASTER_ADDR="${MASTER_ADDR:-$first_node}"',
                "export MASTER_PORT=$((15000 + SLURM_JOB_ID % 20000))",
            ]
        return lines

    def requeue_command(self) -> str:
        return 'scontrol requeue "${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}"'

    def submit_argv(self, script: str, after: list[str]) -> tuple[list[str], bool]:
        argv = ["sbatch", "--parsable"]
        if after:
            argv += ["--kill-on-invalid-dep=yes", "--dependency=afterok:" + ":".join(after)]
        return [*argv, script], False

    def parse_job_id(self, stdout: str) -> str:
        text = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        job_id = text.split(";")[0].strip()
        if not job_id.isdigit():
            raise ValueError(f"sbatch printed no job id: {stdout!r}")
        return job_id
