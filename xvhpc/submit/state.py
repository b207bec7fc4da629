"""Scheduler job states → step states (the schedulers own their queries and parsing)."""

from __future__ import annotations

from ..backends.base import FINAL_BAD, FINAL_OK, PURGED

__all__ = ["FINAL_BAD", "FINAL_OK", "PURGED", "step_state"]

LIVE = ("RUNNING", "COMPLETING", "REQUEUED", "PENDING", "SUSPENDED", "CONFIGURING")


def step_state(job_id: str, states: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Aggregate a job (or array) into one state; also return its tasks' states."""
    tasks = {k: v for k, v in states.items() if k == job_id or k.startswith(job_id + "_")}
    values = set(tasks.values())
    if not values:
        return "UNKNOWN", tasks
    for bad in sorted(FINAL_BAD):
        if bad in values:
            return bad, tasks
    for live in LIVE:
        if live in values:
            return "RUNNING" if live == "COMPLETING" else live, tasks
    if values <= FINAL_OK:
        return "COMPLETED", tasks
    if values <= FINAL_OK | {PURGED}:  # the scheduler forgot some: ended, not live
        return ("COMPLETED" if values & FINAL_OK else PURGED), tasks
    return sorted(values)[0], tasks
