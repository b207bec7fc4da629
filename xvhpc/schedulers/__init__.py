"""Schedulers register themselves on import (available or not; ``available()`` says why)."""

from ..registry import command_available
from . import local, lsf, lsf_classic, slurm  # noqa: F401
from .base import FINAL_BAD, FINAL_OK, REQUEUE_EXIT, SCHEDULERS, Scheduler


def get_scheduler(name: str) -> Scheduler:
    return SCHEDULERS.get(name)()


def availability(name: str) -> tuple[bool, str]:
    """Whether a scheduler's commands are on PATH, and why not."""
    return command_available(*SCHEDULERS.get(name).needs)


__all__ = [
    "FINAL_BAD",
    "FINAL_OK",
    "REQUEUE_EXIT",
    "SCHEDULERS",
    "Scheduler",
    "availability",
    "get_scheduler",
]
