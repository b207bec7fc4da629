"""Launchers: how one distributed step starts its ranks. One ``command()`` each."""

from __future__ import annotations

import shlex
from typing import ClassVar

from ..plan.model import Step
from ..registry import Registry
from ..spec import SiteConfig


class Shell(str):
    """A token that is shell syntax written by xvhpc itself (``"$RUN_DIR"``), not quoted again."""


def render_tokens(tokens: list[str]) -> str:
    """Join tokens, quoting every literal with shlex.quote (Shell tokens stay as written)."""
    return " ".join(t if isinstance(t, Shell) else shlex.quote(t) for t in tokens)


class Launcher:
    """Turns the per-rank command into the launch line for a step."""

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()
    mpi_ingest: ClassVar[bool] = False  # True: ingest runs as one job of MPI ranks, not an array
    # True: the launcher spawns the ranks itself (torchrun's agent), so a container wraps it
    spawns_ranks: ClassVar[bool] = False

    def command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        """The launch line of a distributed step (every rank runs ``argv``)."""
        raise NotImplementedError

    def single_command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        """The launch line of a one-process step: as is, where the batch script runs on a
        compute node (Slurm); through the launcher where it runs on a shared launch node."""
        return argv

    def per_node_command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        """One task on each node of the step (node-local staging); once where there is one node."""
        return argv

    def ingest_ranks_per_node(self, site: SiteConfig) -> int:
        """MPI ingest ranks per node."""
        return max(1, site.node.cores)


LAUNCHERS: Registry[Launcher] = Registry("launcher")
