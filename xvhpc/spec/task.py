"""The task's checks of a spec (pure, no torch): the arch must be one of the task's models, the
pretrained weights one of its choices, and each task adds its own limits (``TaskInfo.check``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import task_info, task_of_arch
from .errors import Problem

if TYPE_CHECKING:
    from .load import LoadedSpec


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
    return problems + info.check(loaded)
