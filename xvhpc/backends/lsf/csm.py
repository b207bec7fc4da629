"""IBM Spectrum LSF with CSM (Summit): #BSUB directives, done() dependencies, arrays, brequeue, bjobs.

Facts from IBM's LSF 10.1 reference and OLCF's Summit guide: ``-nnodes`` asks for whole nodes
(CSM); ``LSB_JOBINDEX`` is 0 for a job that is not an array, so a requeue names ``ID[i]`` only for
an array element; ``-ti`` kills dependents whose condition can never be met (else they pend
forever); ``bjobs -o`` must ask for ``jobindex`` to tell array elements apart.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ...ports import master_port_shell
from ..base import PURGED, SCHEDULERS, Scheduler, shell_join
from ..commands import CommandRunner, SchedulerCommandError
from .options import LsfOptions

if TYPE_CHECKING:
    from ...plan.step import Plan, Step
    from ...spec import SiteConfig

Parsed = TypeVar("Parsed", bound=dict[str, Any])
NOT_FOUND = re.compile(r"Job <(\d+(?:\[\d+\])?)> is not found")

STATES = {
    "PEND": "PENDING",
    "RUN": "RUNNING",
    "DONE": "COMPLETED",
    "EXIT": "FAILED",
    "PSUSP": "SUSPENDED",
    "USUSP": "SUSPENDED",
    "SSUSP": "SUSPENDED",
    "WAIT": "PENDING",
    "ZOMBI": "FAILED",
    "UNKWN": "UNKNOWN",
}

# bkill exits 255 when any id has already finished, or an array has finished elements ("Operation
# is in progress"), yet kills the rest: succeed unless a line says something else went wrong.
BKILL = (
    'out=$(bkill "$@" 2>&1); rc=$?; printf "%s\\n" "$out"; [ "$rc" -eq 0 ] || ! printf "%s\\n" "$out"'
    ' | grep -v -e "is being terminated" -e "already finished" -e "in progress" -e "No matching job"'
    " | grep -q ."
)

# Requeue the running job: the element of an array, else the job itself (never ``ID[0]``).
REQUEUE = (
    'if [ "${LSB_JOBINDEX:-0}" -gt 0 ]; then brequeue "${LSB_JOBID}[${LSB_JOBINDEX}]"; '
    'else brequeue "${LSB_JOBID}"; fi'
)


def lsf_dependency(after: list[str], ended: bool, immediate: bool) -> list[str]:
    """``-w "done(A) && done(B)"`` (or ``ended()``: any end state). ``-ti`` (CSM and real LSF)
    ends a job whose ``done()`` can never hold at once, instead of leaving it pending."""
    if not after:
        return []
    test = "ended" if ended else "done"
    argv = ["-w", " && ".join(f"{test}({j})" for j in after)]
    return [*argv, "-ti"] if immediate and not ended else argv


def bsub_walltime(seconds: int) -> str:
    """``-W`` takes [HH:]MM; round up to whole minutes."""
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def job_key(job_id: str, index: str | int | None) -> str:
    """``123`` / element 2 of 123 → ``123_1`` (xvhpc counts elements from 0, LSF from 1)."""
    i = int(index or 0)
    return f"{job_id}_{i - 1}" if i > 0 else str(job_id)


@SCHEDULERS.register("lsf")
class LsfScheduler(Scheduler):
    suffix = ".lsf"
    needs = ("bsub", "bjobs", "bkill")
    options = LsfOptions
    whole_nodes = True  # CSM's -nnodes: a job holds (and is charged) every core and GPU

    # -- rendering ------------------------------------------------------------------------------
    def job_name(self, step: Step, plan: Plan, site: SiteConfig) -> str:
        name = f"{plan.job_label}-{step.name}"
        if step.scheduler_array:
            if step.packed:  # packed jobs: at most the site's eligible-job cap at once
                slots = min(step.pack_jobs, site.sweep.max_eligible_jobs or step.pack_jobs)
            else:
                slots = step.max_concurrent or 0
            limit = f"%{slots}" if slots else ""
            name = f"{name}[1-{step.scheduler_array}]{limit}"
        return name

    def size_directives(self, step: Step, site: SiteConfig) -> list[str]:
        """How the allocation is asked for (CSM: whole nodes)."""
        lines = [f"#BSUB -nnodes {step.allocation_nodes}"]
        alloc_flags = site.options("scheduler").alloc_flags
        flags = [alloc_flags] if alloc_flags else []
        if step.stage_data and site.node_local and site.node_local.alloc_flags:
            flags.append(site.node_local.alloc_flags)  # Summit: NVME mounts /mnt/bb/$USER
        if flags:
            lines.append(f'#BSUB -alloc_flags "{" ".join(flags)}"')
        return lines

    def directives(self, step: Step, plan: Plan, site: SiteConfig) -> list[str]:
        suffix = ".%J.%I" if step.scheduler_array else ".%J"
        d = [
            f'#BSUB -J "{self.job_name(step, plan, site)}"',
            f"#BSUB -W {bsub_walltime(step.job_seconds)}",
            f"#BSUB -o logs/{step.name}{suffix}.out",
            f"#BSUB -e logs/{step.name}{suffix}.err",
            f'#BSUB -Jd "{plan.token}-{step.name}"',
            *self.size_directives(step, site),
        ]
        if plan.account:
            d.append(f"#BSUB -P {plan.account}")
        cpu_step = not step.gpus_per_node and not step.stages and site.job.cpu_queue
        queue = site.job.cpu_queue if cpu_step else plan.queue
        if queue:
            d.append(f"#BSUB -q {queue}")
        if plan.reservation:
            d.append(f"#BSUB -U {plan.reservation}")
        if site.job.exclusive and step.gpus_per_node:
            d.append("#BSUB -x")
        if plan.notify:  # one mail when the pipeline ends; others only when a job fails (N16)
            d.append("#BSUB -N" if step is plan.steps[-1] else "#BSUB -Ne")
        if step.requeue:
            d += self.warning_directives(site)
        d += [f"#BSUB {x}" for x in site.extra_directives]
        return sorted(d)

    def warning_directives(self, site: SiteConfig) -> list[str]:
        """Signal the job ``seconds_before`` its run limit, so it can checkpoint."""
        warn_min = max(1, math.ceil(site.requeue.seconds_before / 60))
        return [f"#BSUB -wa {site.requeue.signal}", f"#BSUB -wt {warn_min}", "#BSUB -r"]

    def prologue(self, step: Step, site: SiteConfig) -> list[str]:
        lines = []
        if step.scheduler_array:
            lines.append("XVHPC_INDEX=$(( ${LSB_JOBINDEX:-1} - 1 ))  # LSF arrays count from 1")
        if step.distributed or step.stages:
            lines += [
                "# rank 0's host comes from mpi4py or LSB_DJOB_RANKFILE (launch node dropped)",
                f"export MASTER_PORT={master_port_shell('${LSB_JOBID:-0}')}",
            ]
        return lines

    def requeue_command(self) -> str:
        return REQUEUE

    def submit_argv(
        self, script: str, after: list[str], ended: bool = False
    ) -> tuple[list[str], bool]:
        return ["bsub", *lsf_dependency(after, ended, immediate=True)], True

    def submit_shell(
        self, var: str, script: str, after_vars: list[str], ended: bool = False
    ) -> list[str]:
        argv, _ = self.submit_argv(script, [f"${{{v}}}" for v in after_vars], ended)
        return [
            f"{var}=$({shell_join(argv)} < {shell_join([script])}"
            " | sed -n 's/^Job <\\([0-9]*\\)>.*/\\1/p')"
        ]

    # -- parsing and queries ------------------------------------------------------------------
    def parse_job_id(self, stdout: str) -> str:
        match = re.search(r"Job <(\d+)> is submitted", stdout)
        if not match:
            raise ValueError(f"bsub printed no job id: {stdout!r}")
        return match.group(1)

    def _bjobs(
        self,
        options: list[str],
        job_ids: list[str],
        runner: CommandRunner,
        parse: Callable[[str], Parsed],
    ) -> tuple[Parsed, set[str]]:
        """Parsed ``bjobs OPTIONS IDS`` and the ids LSF no longer knows. bjobs exits 255 when an
        id is unknown (purged after CLEAN_PERIOD): those are set apart and the rest asked again
        (issue 22 N15: a purged job must not break status or count as live)."""
        try:
            return parse(runner.run(["bjobs", *options, *job_ids])), set()
        except SchedulerCommandError as exc:
            gone = set(NOT_FOUND.findall(str(exc)))
            rest = [j for j in job_ids if j not in gone]
            if not gone or rest == job_ids:
                raise
            return (parse(runner.run(["bjobs", *options, *rest])) if rest else parse("")), gone

    def query_states(self, job_ids: list[str], runner: CommandRunner) -> dict[str, str]:
        """One ``bjobs -o ... -json`` call; ``jobindex`` tells array elements apart; a purged
        job (an error record or exit 255 "is not found") is PURGED, not unknown."""
        options = ["-a", "-o", "jobid jobindex stat exit_code", "-json"]
        records, gone = self._bjobs(options, job_ids, runner, parse_bjobs_json)
        states = dict.fromkeys(gone, PURGED)
        for record in records["RECORDS"]:
            if "is not found" in str(record.get("ERROR", "")):
                states.update(dict.fromkeys(NOT_FOUND.findall(record["ERROR"]), PURGED))
                continue
            job = str(record.get("JOBID", ""))
            index = record.get("JOBINDEX")
            if "[" in job:  # some versions spell elements 123[2] in JOBID itself
                job, index = job.rstrip("]").split("[")
            stat = record.get("STAT", "")
            states[job_key(job, index)] = STATES.get(stat, stat or "UNKNOWN")
        return states

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["sh", "-c", BKILL, "bkill", *job_ids]

    def find_jobs(self, tag: str, runner: CommandRunner) -> list[str]:
        """Unfinished jobs of this user whose description is ``tag``."""
        out = runner.run(["bjobs", "-o", "jobid job_description", "-json"])
        try:
            records = json.loads(out).get("RECORDS", [])
        except (json.JSONDecodeError, AttributeError):
            return []
        return sorted(
            {
                str(r.get("JOBID", "")).split("[")[0]
                for r in records
                if r.get("JOB_DESCRIPTION") == tag
            }
        )


def parse_bjobs_json(out: str) -> dict[str, Any]:
    """``bjobs -json`` output as ``{"RECORDS": [...]}`` (nothing asked: no records)."""
    if not out.strip():
        return {"RECORDS": []}
    try:
        data = json.loads(out)
        records = data.get("RECORDS", [])
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"bjobs printed no JSON: {out[:200]!r}") from exc
    return {"RECORDS": [r for r in records if isinstance(r, dict)]}
