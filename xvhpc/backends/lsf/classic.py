"""Classic LSF (no CSM): slots, ``span[ptile]``, ``-gpu``, mpirun/blaunch; OpenLava runs it for real.

Most LSF clusters are not Summit: ``-n`` counts slots (cores here), ``-R "span[ptile=N]"`` places N
per host, ``-gpu`` asks for GPUs (only when wanted: OpenLava's mbatchd crashes on it). What differs
from the CSM dialect, and why:

- no ``-wa``/``-wt`` (OpenLava reads ``-wa USR1`` as the dependency ``-w a``): LSF's own run-limit
  warning is used instead, SIGUSR2 at ``-W`` and the kill ten minutes later (IBM's ``bsub -W``
  reference; OpenLava's sbatchd, WARN_TIME). The job script forwards it to the trainer, which
  checkpoints and exits 75; the site's ``requeue.seconds_before`` has no effect here.
- no ``-ti``: a dependent of a failed job stays PEND. ``query_states`` asks for the pending reason
  and reports such a job as ``DEPENDENCY_NEVER_SATISFIED``; ``xvhpc cancel`` removes it.
- no ``bjobs -o``/``-json``: states come from ``bjobs -a -w`` text, where an array element is the
  bare array id in JOBID and ``name[i]`` in JOB_NAME (some versions write ``123[2]`` in JOBID).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..base import FINAL_BAD, PURGED, SCHEDULERS
from ..commands import CommandRunner, SchedulerCommandError
from .csm import STATES, LsfScheduler, job_key, lsf_dependency

if TYPE_CHECKING:
    from ...plan.step import Plan, Step
    from ...spec import SiteConfig

ROW_ID = re.compile(r"^(\d+)(?:\[(\d+)\])?$")
NAME_INDEX = re.compile(r"\[(\d+)\]$")
NEVER_SATISFIED = "never satisfied"  # "Dependency condition invalid or never satisfied"
CONTINUATION = " " * 21  # bjobs -l wraps its lines at 80 columns, continuing at column 22


@SCHEDULERS.register("lsf-classic")
class LsfClassicScheduler(LsfScheduler):
    whole_nodes = False  # slots (-n) and span[ptile]: a job holds what it asks for

    # -- rendering ------------------------------------------------------------------------------
    def size_directives(self, step: Step, site: SiteConfig) -> list[str]:
        """Slots = tasks × cores per task; ``ptile`` keeps each node's share on one host."""
        per_host = step.tasks_per_node * step.cpus_per_task
        lines = [
            f"#BSUB -n {step.allocation_nodes * per_host}",
            f'#BSUB -R "span[ptile={per_host}]"',
        ]
        if step.gpus_per_node:
            # LSF's default is num=1:mode=shared:j_exclusive=no: "the GPU can be used by other
            # jobs" (IBM, Example GPU job submissions); a training job owns its GPUs
            lines.append(f'#BSUB -gpu "num={step.gpus_per_node}:j_exclusive=yes"')
        return lines

    def warning_directives(self, site: SiteConfig) -> list[str]:
        """Rerunnable; the warning is LSF's SIGUSR2 at the run limit, or ``-wa``/``-wt`` where
        the site's LSF is IBM's (``lsf.warning_action``)."""
        if site.options("scheduler").warning_action:
            return super().warning_directives(site)
        return ["#BSUB -r"]

    def submit_argv(
        self, script: str, after: list[str], ended: bool = False
    ) -> tuple[list[str], bool]:
        return ["bsub", *lsf_dependency(after, ended, immediate=False)], True

    def directives(self, step: Step, plan: Plan, site: SiteConfig) -> list[str]:
        """As LSF's, plus ``-ti`` in the script where the site's LSF has it (OpenLava does not)."""
        lines = super().directives(step, plan, site)
        if (
            site.options("scheduler").terminate_invalid_dependency
            and step.after
            and not step.after_ended
        ):
            lines = sorted([*lines, "#BSUB -ti"])
        return lines

    # -- parsing and queries ------------------------------------------------------------------
    def query_states(self, job_ids: list[str], runner: CommandRunner) -> dict[str, str]:
        """``bjobs -a -w``; then, only when some pend, ``bjobs -l`` for their dependency and reason.

        A pending job is never satisfied when LSF says so, or when it waits on ``done()`` of a job
        that failed or is itself never satisfied (LSF reports only the first link of a chain)."""
        rows, gone = self._bjobs(["-a", "-w"], job_ids, runner, parse_bjobs)
        states = {key: STATES.get(stat, stat or "UNKNOWN") for key, (stat, _) in rows.items()}
        states.update(dict.fromkeys(gone, PURGED))
        pending = sorted({key.split("_")[0] for key, s in states.items() if s == "PENDING"})
        if not pending:
            return states
        waits = {
            key: (condition, reasons)
            for key, (stat, condition, reasons) in self._bjobs(
                ["-l"], pending, runner, parse_bjobs_long
            )[0].items()
            if stat == "PEND" and states.get(key) == "PENDING"
        }
        changed = True
        while changed:
            changed = False
            for key, (condition, reasons) in waits.items():
                if states[key] == "PENDING" and (
                    NEVER_SATISFIED in reasons.lower() or _waits_on_failed(condition, states)
                ):
                    states[key] = "DEPENDENCY_NEVER_SATISFIED"
                    changed = True
        return states

    def find_jobs(self, tag: str, runner: CommandRunner) -> list[str]:
        """Unfinished jobs of this user whose ``-Jd`` description is ``tag`` (from ``bjobs -l``)."""
        try:
            out = runner.run(["bjobs", "-l"])
        except SchedulerCommandError as exc:
            if "no unfinished job" in str(exc).lower():
                return []
            raise
        return sorted(
            {
                m.group(1)
                for line in unwrap(out)
                if (m := re.match(r"Job Id <(\d+)", line))
                and re.search(rf"Job\s*Description\s*<{re.escape(tag)}>", line)
            }
        )


def parse_bjobs(text: str) -> dict[str, tuple[str, str]]:
    """``bjobs -w`` text → {``ID`` or ``ID_i``: (LSF state, pending-reason lines)}.

    Columns: JOBID USER STAT QUEUE FROM_HOST EXEC_HOST JOB_NAME SUBMIT_TIME (three words). Lines
    that start with a blank continue the row above (``-p`` reasons, more execution hosts).
    """
    rows: dict[str, tuple[str, str]] = {}
    key = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("JOBID"):
            continue
        if line[0].isspace():
            if key is not None:
                stat, reasons = rows[key]
                rows[key] = (stat, reasons + line.strip() + "\n")
            continue
        fields = line.split()
        match = ROW_ID.match(fields[0])
        if match is None or len(fields) < 10:
            raise ValueError(f"unexpected bjobs line: {line!r}")
        job, index = match.groups()
        if index is None and (named := NAME_INDEX.search(" ".join(fields[6:-3]))):
            index = named.group(1)
        key = job_key(job, index)
        rows[key] = (fields[2], "")
    return rows


def parse_bjobs_long(text: str) -> dict[str, tuple[str, str, str]]:
    """``bjobs -l`` text → {``ID`` or ``ID_i``: (LSF state, dependency condition, pending reasons)}."""
    records: dict[str, list[str]] = {}  # [state, condition, reasons]
    key = None
    in_reasons = False
    for line in unwrap(text):
        if match := re.match(r"Job Id <(\d+)(?:\[(\d+)\])?>", line):
            key = job_key(*match.groups())
            status = re.search(r"Status\s*<(\w+)>", line)
            records[key] = [status.group(1) if status else "UNKNOWN", "", ""]
            in_reasons = False
        elif key is None:
            continue
        elif found := re.search(r"Dependency\s*Condition\s*<([^>]*)>", line):
            records[key][1] = found.group(1)
        elif line.strip() == "PENDING REASONS:":
            in_reasons = True
        elif in_reasons and line.strip():
            records[key][2] += line.strip() + "\n"
        else:
            in_reasons = False
    return {k: (v[0], v[1], v[2]) for k, v in records.items()}


def _waits_on_failed(condition: str, states: dict[str, str]) -> bool:
    """Whether ``done(ID)``/``done(ID[i])`` in ``condition`` names a job that can no longer end DONE."""
    for job, index in re.findall(r"done\((\d+)(?:\[(\d+)\])?\)", condition):
        keys = [job_key(job, index)] if index else [k for k in states if k.split("_")[0] == job]
        if any(states.get(k) in FINAL_BAD for k in keys):
            return True
    return False


def unwrap(text: str) -> list[str]:
    """``bjobs -l`` lines with their 80-column wrapping undone (continuations joined as is)."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith(CONTINUATION) and lines:
            lines[-1] += line[len(CONTINUATION) :]
        else:
            lines.append(line)
    return lines
