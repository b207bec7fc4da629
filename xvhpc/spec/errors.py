"""Validation errors that name the file, the line and the dotted key path."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field


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
        return text


@dataclass
class SpecError(Exception):
    """One or more problems, reported together."""

    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} found:"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


def closest_first(word: str, choices: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """All ``choices``, the ones most like ``word`` first."""
    close = difflib.get_close_matches(word, choices, n=len(choices), cutoff=0.5)
    return tuple(close + sorted(c for c in choices if c not in close))


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """`` — did you mean X?`` or an empty string."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" — did you mean {close[0]}?" if close else ""
