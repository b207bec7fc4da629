"""Validation errors that name the file, the line and the dotted key path."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..registry import closest_first, did_you_mean
from ..util import UserError

__all__ = ["Problem", "SpecError", "UserError", "closest_first", "did_you_mean", "printable"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """``text`` with control characters (a newline in a YAML key …) shown as escapes, so a
    message stays one line whatever the file held."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec or site file."""

    file: str
    line: int | None
    key: str
    message: str
    choices: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.key or '<top>'}: {self.message}"
        if self.choices:
            text += f" (valid: {', '.join(self.choices)})"
        return printable(text)


@dataclass
class SpecError(Exception):
    """One or more problems, reported together."""

    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} found:"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])
