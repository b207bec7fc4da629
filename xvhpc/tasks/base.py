"""What a task tells the rest of xvhpc: ``TaskInfo`` (torch-free names and spec checks, read on
the login side) and ``Task`` (the compute-side hooks the task-blind pipeline calls).

The split follows the login/compute seam: validating a spec or showing a run's status must not
import torch, so everything those need is plain data in ``TaskInfo``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from ..spec.errors import Problem
    from ..spec.load import LoadedSpec


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
    mode: Literal["max", "min"]  # higher or lower is better for ``selection``
    rank_by: tuple[str, ...]  # evaluate.rank_by choices: held-out metrics of this task
    outputs: tuple[str, ...]  # what predict and serve return, for the docs ("class", "boxes")
    check: Callable[[LoadedSpec], list[Problem]]  # the spec's limits for this task

    @property
    def objectives(self) -> tuple[str, ...]:
        """What a study may optimise: the validation loss or one of the task's metrics."""
        return ("val_loss", *self.val_metrics)

    def better(self, new: float, old: float | None) -> bool:
        """Whether ``new`` beats ``old`` for the selection metric (None: nothing yet)."""
        if old is None:
            return True
        return new > old if self.mode == "max" else new < old


class Task(Protocol):
    """The compute-side hooks of one task; ``tasks/<name>/task.py`` defines ``TASK``.

    The pipeline (ingest, train, evaluate, report, predict), serve and export are drivers:
    they call these and never compare a task's name.
    """

    info: TaskInfo

    # -- ingest: catalog, per-sample processing, shard writer (owner: ingest/train work) --

    # -- train: dataset, model, loss, validation (owner: ingest/train work) --

    # -- evaluate, cross-validation, report section (owner: evaluate/report work) --

    # -- predict, serve, export (owner: predict/serve work) --
