"""A validated spec with where it came from (file, lines): what every spec check takes. A leaf
of ``spec/``, so the checks (points, task) and the loader import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import Problem
from .schema import ExperimentSpec
from .yamlio import LineMap, line_for


@dataclass
class LoadedSpec:
    """A validated spec with where it came from."""

    spec: ExperimentSpec
    raw: dict[str, Any]
    file: str
    lines: LineMap

    def problem(self, key: str, message: str, choices: tuple[str, ...] = ()) -> Problem:
        return Problem(self.file, line_for(self.lines, key), key, message, choices)
