"""Slurm: #SBATCH directives, afterok dependencies, job arrays, signal + requeue, sacct/squeue."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...ports import master_port_shell
from ..base import SCHEDULERS, Scheduler, shell_join
from ..commands import CommandRunner
from .options import SlurmOptions

if TYPE_CHECKING:
    from ...plan.step import Plan, Step
    from ...spec import SiteConfig


def normalise(state: str) -> str:
    """'CANCELLED by 0' → CANCELLED; 'RUNNING+' → RUNNING."""
    return state.split()[0].rstrip("+") if state else "UNKNOWN"


def job_options(step: Step, plan: Plan, site: SiteConfig) -> dict[str, str]:
    """Partition, account, QoS, constraint, reservation, memory, exclusivity: the steps that
    use no GPU go to the site's CPU partition/constraint where it has one (N16)."""
    job = site.job
    cpu_step = not step.gpus_per_node and not step.stages
    queue = job.cpu_queue if cpu_step and job.cpu_queue else plan.queue
    constraint = job.cpu_constraint if cpu_step and job.cpu_constraint else job.constraint
    d = {
        "--partition": queue,
        "--account": job.cpu_account if cpu_step and job.cpu_account else plan.account,
        "--qos": job.cpu_qos if cpu_step and job.cpu_qos else plan.qos,
        "--constraint": constraint,
        "--reservation": plan.reservation,
        "--exclusive": "" if job.exclusive and not cpu_step else None,
    }
    if job.mem_per_gpu_gb and step.gpus_per_node:
        d["--mem-per-gpu"] = f"{job.mem_per_gpu_gb}G"
    return {k: v for k, v in d.items() if v is not None}


@SCHEDULERS.register("slurm")
class SlurmScheduler(Scheduler):
    suffix = ".sbatch"
    needs = ("sbatch", "squeue", "sacct", "scancel")
    options = SlurmOptions

    def directives(self, step: Step, plan: Plan, site: SiteConfig) -> list[str]:
        out = f"logs/{step.name}-%A_%a.out" if step.scheduler_array else f"logs/{step.name}-%j.out"
        d = {
            "--job-name": f"{plan.job_label}-{step.name}",
            "--comment": f"{plan.token}-{step.name}",
            "--output": out,
            "--nodes": str(step.allocation_nodes),
            "--time": step.job_walltime,
            "--cpus-per-task": str(step.cpus_per_task * site.node.smt),  # Slurm counts threads
            "--open-mode": "append",
            "--export": "ALL",
        }
        if step.distributed:
            d["--ntasks-per-node"] = str(step.tasks_per_node)
        else:
            d["--ntasks"] = "1"
        if step.gpus_per_node:
            if site.options("scheduler").gpu_request == "gres":
                d["--gres"] = f"gpu:{step.gpus_per_node}"
            else:
                d["--gpus-per-node"] = str(step.gpus_per_node)
        d.update(job_options(step, plan, site))
        if step.scheduler_array:
            slots = step.max_concurrent if not step.packed else site.sweep.max_eligible_jobs
            limit = f"%{slots}" if slots else ""
            d["--array"] = f"0-{step.scheduler_array - 1}{limit}"
        if plan.notify:  # one mail when the pipeline ends; others only when a job fails (N16)
            d["--mail-type"] = "END,FAIL" if step is plan.steps[-1] else "FAIL"
        lines = [f"#SBATCH {k}={v}" if v else f"#SBATCH {k}" for k, v in d.items()]
        if step.requeue:
            lines.append(f"#SBATCH --signal=B:{site.requeue.signal}@{site.requeue.seconds_before}")
            lines.append("#SBATCH --requeue")
        lines += [f"#SBATCH {x}" for x in site.extra_directives]
        return sorted(lines)

    def prologue(self, step: Step, site: SiteConfig) -> list[str]:
        lines = []
        if step.scheduler_array:
            lines.append('XVHPC_INDEX="${SLURM_ARRAY_TASK_ID:-0}"')
        if step.distributed or step.stages:
            lines += [
                "# rank 0 runs on the first node of the allocation; NodeAddr is what ranks can reach",
                'first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                "MASTER_ADDR=$(scontrol show node \"$first_node\" | sed -n 's/.*NodeAddr=\\([^ ]*\\).*/\\1/p')",
                'export MASTER_ADDR="${MASTER_ADDR:-$first_node}"',
                f"export MASTER_PORT={master_port_shell('SLURM_JOB_ID')}",
            ]
        return lines

    def requeue_command(self) -> str:
        return 'scontrol requeue "${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}"'

    def submit_argv(
        self, script: str, after: list[str], ended: bool = False
    ) -> tuple[list[str], bool]:
        argv = ["sbatch", "--parsable"]
        if after:
            kind = "afterany" if ended else "afterok"
            argv += ["--kill-on-invalid-dep=yes", f"--dependency={kind}:" + ":".join(after)]
        return [*argv, script], False

    def test_argv(self, script: str) -> list[str] | None:
        """sbatch(1) --test-only: "validate the batch script and return an estimate of when a
        job would be scheduled to run … No job is actually submitted" (dependencies left out:
        the jobs they name do not exist yet)."""
        return ["sbatch", "--test-only", script]

    def submit_shell(
        self, var: str, script: str, after_vars: list[str], ended: bool = False
    ) -> list[str]:
        argv, _ = self.submit_argv(script, [f"${{{v}}}" for v in after_vars], ended)
        return [f"{var}=$({shell_join(argv)})", f'{var}="${{{var}%%;*}}"']

    def parse_job_id(self, stdout: str) -> str:
        text = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        job_id = text.split(";")[0].strip()
        if not job_id.isdigit():
            raise ValueError(f"sbatch printed no job id: {stdout!r}")
        return job_id

    def query_states(self, job_ids: list[str], runner: CommandRunner) -> dict[str, str]:
        """One sacct call (arrays expanded by submitit's parser); squeue for jobs not in it yet."""
        from submitit.slurm.slurm import SlurmInfoWatcher

        argv = ["sacct", "-o", "JobID,State,ExitCode", "--parsable2", "-X"]
        for job in job_ids:
            argv += ["-j", job]
        info = SlurmInfoWatcher().read_info(runner.run(argv))
        states = {job: normalise(stats.get("State", "")) for job, stats in info.items()}
        missing = [j for j in job_ids if not any(k == j or k.startswith(j + "_") for k in states)]
        if missing:  # very fresh jobs may not be in accounting yet
            out = runner.run(["squeue", "--noheader", "-o", "%i|%T", "-j", ",".join(missing)])
            for line in out.splitlines():
                if "|" in line:
                    job, state = line.split("|", 1)
                    states[job.strip()] = normalise(state.strip())
        return states

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["scancel", *job_ids]

    def find_jobs(self, tag: str, runner: CommandRunner) -> list[str]:
        out = runner.run(["squeue", "--me", "--noheader", "-o", "%A|%k"])
        found = (line.split("|", 1) for line in out.splitlines() if "|" in line)
        return sorted({job.strip() for job, comment in found if comment.strip() == tag})
