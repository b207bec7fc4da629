"""The task's checks of a spec (pure, no torch): the arch must be one of the task's models, the
pretrained weights one of its choices, and each task adds its own limits (``TaskInfo.check``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import task_info, task_of_arch
from .errors import Problem

if TYPE_CHECKING:
    from .loaded import LoadedSpec


def check_task(loaded: LoadedSpec) -> list[Problem]:
    """Problems of a spec's model and data for its task (an arch of another task, ...)."""
    spec = loaded.spec
    info = task_info(spec.task)
    arch = spec.model.arch
    problems = []
    if arch not in info.archs:
        owner = task_of_arch(arch)
        where = f"a model of task: {owner.name}; set task: {owner.name}, or" if owner else "not"
        message = f"{arch!r} is {where} pick a model of task: {info.name}"
        problems.append(loaded.problem("model.arch", message, info.archs))
    pretrained = spec.model.pretrained
    if pretrained not in info.pretrained and not info.pretrained_path:
        problems.append(
            loaded.problem(
                "model.pretrained",
                f"{pretrained!r}: task: {info.name} starts from one of these (the offline "
                "weights cache: xvhpc weights fetch ARCH)",
                info.pretrained,
            )
        )
    mode = spec.model.mode
    if mode is not None and mode not in info.modes:
        where = "has one way of modelling: leave model.mode out" if not info.modes else "models"
        problems.append(
            loaded.problem("model.mode", f"{mode!r}: task: {info.name} {where}", info.modes)
        )
    return problems + _metric_names(loaded) + info.check(loaded)


def _metric_names(loaded: LoadedSpec) -> list[Problem]:
    """rank_by, a study's objective and early stopping's metric: names of the task's metrics."""
    spec = loaded.spec
    info = task_info(spec.task)
    named = {"evaluate.rank_by": (spec.evaluate.rank_by, info.rank_by)}
    if spec.sweep is not None and spec.sweep.objective is not None:
        named["sweep.objective"] = (spec.sweep.objective, info.objectives)
    if spec.train.early_stop is not None:
        named["train.early_stop.metric"] = (spec.train.early_stop.metric, info.objectives)
    return [
        loaded.problem(key, f"{value!r} is not a metric of task: {info.name}", choices)
        for key, (value, choices) in named.items()
        if value not in choices
    ]
