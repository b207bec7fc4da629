"""Launchers register themselves on import."""

from . import jsrun, local, mpirun, srun, torchrun  # noqa: F401
from .base import LAUNCHERS, Launcher, Shell, render_tokens

__all__ = ["LAUNCHERS", "Launcher", "Shell", "render_tokens"]
