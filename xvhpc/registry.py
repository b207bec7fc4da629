"""Name → backend registries that list known names on a typo and keep unavailable backends."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .spec.errors import closest_first, did_you_mean

T = TypeVar("T")


class UnknownName(KeyError):
    """A name not in a registry; the message lists the known ones, closest first."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Registry(Generic[T]):
    """A small registry: ``@reg.register("name")`` on a class; ``reg.get("name")``."""

    kind: str

    def __post_init__(self) -> None:
        self._items: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            if name in self._items and self._items[name] is not cls:
                raise ValueError(
                    f"{self.kind} {name!r} is registered twice "
                    f"({self._items[name].__module__} and {cls.__module__})"
                )
            self._items[name] = cls
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return deco

    def get(self, name: str) -> type[T]:
        if name not in self._items:
            names = sorted(self._items)
            raise UnknownName(
                f"unknown {self.kind} {name!r}{did_you_mean(name, names)} "
                f"(known: {', '.join(closest_first(name, names))})"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)


def command_available(*commands: str) -> tuple[bool, str]:
    """(True, '') when every command is on PATH, else (False, why)."""
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        return False, f"{', '.join(missing)} not found on PATH"
    return True, ""
