"""Name → backend registries that list known names on a typo and keep unavailable backends, and
the discovery of tasks (one folder each). A leaf: the spec checks names through it."""

from __future__ import annotations

import difflib
import functools
import importlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from .tasks.base import Task, TaskInfo

T = TypeVar("T")


def closest_first(word: str, choices: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """All ``choices``, the ones most like ``word`` first."""
    if not choices:
        return ()
    close = difflib.get_close_matches(word, choices, n=len(choices), cutoff=0.5)
    return tuple(close + sorted(c for c in choices if c not in close))


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """`` — did you mean X?`` or an empty string."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" — did you mean {close[0]}?" if close else ""


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


def discover(package: str, module: str) -> dict[str, ModuleType]:
    """``package.<folder>.<module>`` for every sub-folder of ``package`` that has it, by folder
    name (ReFrame's way of finding its backends): a new task or backend is one new folder,
    and the code that lists them never names one."""
    root = importlib.import_module(package)
    found = {}
    for entry in sorted(Path(next(iter(root.__path__))).iterdir()):
        if entry.is_dir() and (entry / f"{module}.py").is_file():
            found[entry.name] = importlib.import_module(f"{package}.{entry.name}.{module}")
    return found


DEFAULT_TASK = "classify"  # a spec without ``task:``, a bundle that does not say


@functools.cache
def task_infos() -> dict[str, TaskInfo]:
    """Every task's torch-free ``TaskInfo`` (``xvhpc/tasks/<name>/info.py``), by name."""
    infos = {name: mod.INFO for name, mod in discover("xvhpc.tasks", "info").items()}
    archs: dict[str, str] = {}
    for name, info in infos.items():
        for arch in info.archs:
            if arch in archs:
                raise ValueError(f"arch {arch!r} is registered by tasks {archs[arch]} and {name}")
            archs[arch] = name
    return infos


def task_info(name: str) -> TaskInfo:
    """One task's ``TaskInfo``; an unknown name lists the known ones, closest first."""
    infos = task_infos()
    if name not in infos:
        names = sorted(infos)
        raise UnknownName(
            f"unknown task {name!r}{did_you_mean(name, names)} "
            f"(known: {', '.join(closest_first(name, names))})"
        )
    return infos[name]


def task_of_arch(arch: str) -> TaskInfo | None:
    """The task whose models include ``arch`` (None: no task's)."""
    return next((i for i in task_infos().values() if arch in i.archs), None)


def load_task(name: str) -> Task:
    """One task's compute-side hooks (``xvhpc/tasks/<name>/task.py``; imports torch)."""
    task_info(name)  # the clear error for an unknown name
    return importlib.import_module(f"xvhpc.tasks.{name}.task").TASK  # type: ignore[no-any-return]
