"""Scheduler job states → step states, per batch system (one batched query per call)."""

from __future__ import annotations

import json

from .commands import CommandRunner

FINAL_OK = {"COMPLETED"}
FINAL_BAD = {
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}
LSF_STATES = {
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


def normalise(state: str) -> str:
    """'CANCELLED by 0' → CANCELLED."""
    return state.split()[0].rstrip("+") if state else "UNKNOWN"


def slurm_states(job_ids: list[str], runner: CommandRunner) -> dict[str, str]:
    """One sacct call for every job (arrays expanded through submitit's sacct parser)."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    argv = ["sacct", "-o", "JobID,State,ExitCode", "--parsable2", "-X"]
    for job in job_ids:
        argv += ["-j", job]
    info = SlurmInfoWatcher().read_info(runner.run(argv))
    states = {job: normalise(stats.get("State", "")) for job, stats in info.items()}
    missing = [j for j in job_ids if not any(k == j or k.startswith(j + "_") for k in states)]
    if missing:  # very fresh jobs may not be in accounting yet: ask squeue once
        out = runner.run(["squeue", "--noheader", "-o", "%i|%T", "-j", ",".join(missing)])
        for line in out.splitlines():
            if "|" in line:
                job, state = line.split("|", 1)
                states[job.strip()] = normalise(state.strip())
    return states


def lsf_states(job_ids: list[str], runner: CommandRunner) -> dict[str, str]:
    """One bjobs call; array elements appear as 123[1]."""
    out = runner.run(["bjobs", "-a", "-o", "jobid stat exit_code", "-json", *job_ids])
    records = json.loads(out).get("RECORDS", [])
    states = {}
    for record in records:
        job = str(record.get("JOBID", ""))
        if "[" in job:
            base, index = job.rstrip("]").split("[")
            job = f"{base}_{int(index) - 1}"
        states[job] = LSF_STATES.get(record.get("STAT", ""), record.get("STAT", "UNKNOWN"))
    return states


def step_state(job_id: str, states: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Aggregate a job (or array) into one state; also return its tasks' states."""
    tasks = {k: v for k, v in states.items() if k == job_id or k.startswith(job_id + "_")}
    values = set(tasks.values())
    if not values:
        return "UNKNOWN", tasks
    for bad in sorted(FINAL_BAD):
        if bad in values:
            return bad, tasks
    for live in ("RUNNING", "COMPLETING", "REQUEUED", "PENDING", "SUSPENDED", "CONFIGURING"):
        if live in values:
            return "RUNNING" if live == "COMPLETING" else live, tasks
    if values <= FINAL_OK:
        return "COMPLETED", tasks
    return sorted(values)[0], tasks
