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

    def command(self, step: Step, site: SiteConfig, argv: list[str]) -> list[str]:
        raise NotImplementedError


LAUNCHERS: Registry[Launcher] = Registry("launcher")
