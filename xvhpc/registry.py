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
from typing import Any, Generic, Literal, TypeVar

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


@dataclass(frozen=True)
class TaskInfo:
    """A task's vocabulary: its architectures and pretrained-weight choices, the validation
    metrics its training writes to ``progress.json``, the one that chooses the best checkpoint
    (and in which direction), what evaluate can rank by, and the spec checks of its limits."""

    name: str  # the spec's ``task:`` value and the folder's name
    title: str  # "classification": shown in the report and the served model's description
    archs: tuple[str, ...]  # model.arch choices; models/zoo.py builds them
    pretrained: tuple[str, ...]  # the named model.pretrained choices (a path is also allowed
    # where ``pretrained_path`` is true)
    pretrained_path: bool  # whether model.pretrained may be a path to a state dict
    val_metrics: tuple[str, ...]  # what each validation round writes (besides val_loss)
    selection: str  # the validation metric that chooses the best checkpoint
    selection_label: str  # how `xvhpc status` shows it ("val acc")
    mode: Literal["max", "min"]  # higher or lower is better for ``selection``
    rank_by: tuple[str, ...]  # evaluate.rank_by choices: held-out metrics of this task
    outputs: tuple[str, ...]  # what predict and serve return, for the docs ("class", "boxes")
    predictions_suffix: str  # of a predict chunk file and of OUT/predictions<suffix> (".csv"):
    # here, torch-free, because `xvhpc predict` names the merged file on the login side
    # the spec's limits for this task: LoadedSpec → list[Problem] (spec/ imports this module,
    # so the types are named here only in words)
    check: Callable[[Any], list[Any]]
    # "module:function" of the task's torch-free catalog builder ((source, DataSpec) → Catalog):
    # what `xvhpc init` lists on the login side ("": none; init then loads the task's hooks)
    catalog: str = ""
    # the `xvhpc predict --format` review files this task writes (labelstudio, coco); () none
    review_formats: tuple[str, ...] = ()
    # model.mode choices (segment: semantic, instance); () : the task has one way of modelling
    modes: tuple[str, ...] = ()

    def catalog_builder(self) -> Callable[..., Any] | None:
        """The torch-free catalog builder ``catalog`` names (None where the task names none)."""
        if not self.catalog:
            return None
        module, _, name = self.catalog.partition(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]

    @property
    def objectives(self) -> tuple[str, ...]:
        """What a study may optimise: the validation loss or one of the task's metrics."""
        return ("val_loss", *self.val_metrics)

    def direction(self, metric: str) -> Literal["maximize", "minimize"]:
        """Which way ``metric`` (val_loss or one of ``val_metrics``) improves."""
        if metric.endswith("loss") or self.mode == "min":
            return "minimize"
        return "maximize"

    def objective_for(self, rank_by: str) -> str:
        """What a study optimises for a ``rank_by``: the same metric where training measures it
        (val_<rank_by>), else the validation loss, the measured stand-in that tracks the rest."""
        metric = f"val_{rank_by}"
        return metric if metric in self.val_metrics else "val_loss"

    def better(self, new: float, old: float | None) -> bool:
        """Whether ``new`` beats ``old`` for the selection metric (None: nothing yet)."""
        if old is None:
            return True
        return new > old if self.mode == "max" else new < old


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


def load_task(name: str) -> Any:  # a tasks.base.Task (typed there: it imports torch types)
    """One task's compute-side hooks (``xvhpc/tasks/<name>/task.py``; imports torch)."""
    task_info(name)  # the clear error for an unknown name
    return importlib.import_module(f"xvhpc.tasks.{name}.task").TASK
