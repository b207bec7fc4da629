"""What a task tells the rest of xvhpc: ``TaskInfo`` (torch-free names and spec checks, read on
the login side) and ``Task`` (the compute-side hooks the task-blind pipeline calls).

The split follows the login/compute seam: validating a spec or showing a run's status must not
import torch, so everything those need is plain data in ``TaskInfo``. ``LazyTask`` builds a
``Task`` from a table of "module:function" names, imported at a hook's first call: importing a
task's ``task.py`` loads neither torch nor any module its hooks name.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..registry import TaskInfo, closest_first, did_you_mean

if TYPE_CHECKING:
    import argparse
    import logging
    from pathlib import Path

    import numpy as np
    import torch
    from torch import nn

    from ..data.dataset import ShardDataset
    from ..data.labelstudio import Review
    from ..data.records import SampleJob
    from ..data.sample import Catalog
    from ..data.shards import Record, ShardWriter
    from ..models.bundle import Bundle
    from ..rundir.records import PredictJob
    from ..rundir.run import RunDir
    from ..runtime.distributed import Context
    from ..spec.errors import Problem
    from ..spec.loaded import LoadedSpec
    from ..spec.schema import DataSpec, ExperimentSpec, ModelSpec


class Task(Protocol):
    """The compute-side hooks of one task; ``tasks/<name>/task.py`` defines ``TASK``.

    The pipeline (ingest, train, evaluate, report, predict), serve and export are drivers:
    they call these and never compare a task's name.
    """

    info: TaskInfo

    # -- ingest: catalog, per-sample processing, shard writer (owner: ingest/train work) --

    def catalog(self, source: str | Path, data: DataSpec) -> Catalog:
        """List, split and plan a data source: the samples ingest writes (``CatalogError``
        when the source as a whole cannot be used)."""
        ...

    def process_sample(self, job: SampleJob) -> tuple[list[Record], str | None]:
        """One file → its records (original and augmented copies), or ([], why it is
        skipped); records with a reason: kept, with a note. Runs in ingest's worker processes."""
        ...

    def shard_writer(self) -> type[ShardWriter]:
        """The writer of this task's shards (it stores what its records carry)."""
        ...

    # -- train: dataset, model, loss, validation (owner: ingest/train work) --

    def dataset_class(self) -> type[ShardDataset]:
        """The dataset that reads this task's shards for training and validation."""
        ...

    def build_model(self, spec: ModelSpec, num_classes: int, image_size: int) -> nn.Module:
        """The model of ``spec`` (an arch of ``info.archs``) for ``num_classes`` data classes."""
        ...

    def weights(self) -> dict[str, str]:
        """Each arch's pretrained weights in the offline cache: arch → the torchvision weights
        enum member under ``torchvision.models`` ("ResNet18_Weights.IMAGENET1K_V1")."""
        ...

    def loss(
        self, spec: ExperimentSpec, train_set: ShardDataset, num_classes: int, device: torch.device
    ) -> Callable[..., torch.Tensor]:
        """The training loss, built once: ``loss(net, images, labels, ctx, amp_dtype, generator)``
        gives one batch's loss (any online augmentation included)."""
        ...

    def validate(
        self, model: nn.Module, dataset: ShardDataset, ctx: Context, batch_size: int,
        classes: list[str],
    ) -> dict[str, float]:  # fmt: skip
        """``val_loss``, ``val_samples`` and ``info.val_metrics`` over ``dataset``; every rank
        calls it (ranks take disjoint slices) and gets the same figures."""
        ...

    # -- evaluate, cross-validation, report section (owner: evaluate/report work) --

    figures: dict[str, str]  # metrics.json key → label: the report's headline and leaderboard
    default_decision: str  # the report's words for the deployed model's decision without a rule

    def evaluate_point(
        self, run: RunDir, point: int, data: str | None, log: logging.Logger,
        keep: dict[int, dict] | None = None,
    ) -> dict | None:  # fmt: skip
        """Score one point's model (its held-out split, or the labelled ``data``): write
        eval/<point>/metrics.json (figures as ``{value, ci_low, ci_high}``, the task's
        ``info.rank_by`` among them) and return it; None when the point has no model.
        ``keep`` collects the predictions ``pool`` needs; ``EvaluateError`` when it cannot."""
        ...

    def pool(
        self, run: RunDir, results: dict[int, dict], found: dict[int, dict], log: logging.Logger
    ) -> dict[int, dict]:
        """Cross-validation: each sweep point's folds pooled into one set of figures, keyed by
        its deployed point (what the leaderboard ranks instead of the folds)."""
        ...

    def crossval_section(self, run: RunDir, manifest: dict) -> str:
        """The report's cross-validation HTML ("" when the run does not cross-validate)."""
        ...

    def report_point(self, run: RunDir, point: int, metrics: dict) -> str:
        """The report's HTML for one evaluated point (``metrics``: its metrics.json)."""
        ...

    def report_extras(self, run: RunDir, best: int) -> str:
        """The report's HTML after the points (heatmaps of the published point ``best``)."""
        ...

    # -- predict, serve, export (owner: predict/serve work) --

    noun: str  # what one model of this task is called ("classifier"): serve's description

    @property
    def chunk_suffix(self) -> str:
        """Of a predict chunk file and of OUT/predictions<suffix>: ``info.predictions_suffix``."""
        ...

    exports: tuple[str, ...]  # the ``xvhpc export --format`` choices its models support

    def predict_chunk(
        self, bundle: Bundle, job: PredictJob, index: int, out: Path
    ) -> tuple[str, int, int]:
        """Chunk ``index`` of ``job`` as the text of its chunk file, with the counts predicted
        and skipped (a file that cannot be decoded is a row that says why, never an error)."""
        ...

    def chunk_rows(
        self, text: str, items: list[dict[str, str]], meta: dict
    ) -> tuple[list[str], list[str]]:
        """(the input path of each row of a chunk file's ``text``, each of ``items`` as a row
        names it); ``ChunkDamaged`` when ``text`` is not this task's chunk format."""
        ...

    def merge(
        self, out: Path, files: list[Path], job: PredictJob, meta: dict, log: logging.Logger
    ) -> int:
        """Join the (checked) chunk files in order, plus the reader's skipped files, into
        OUT/predictions<chunk_suffix> and OUT/summary.json; prints the summary."""
        ...

    def reviews(
        self, predictions: Path, files: dict[str, str], classes: list[str]
    ) -> tuple[list[Review], int]:
        """The merged predictions as review items for ``xvhpc predict --format labelstudio|coco``
        (``files``: each input's path by its name in the predictions), with the count of
        skipped rows. Optional: a task without it (and without ``info.review_formats``) is
        refused at ``xvhpc predict`` with the formats of the tasks that have it."""
        ...

    def serve_response(
        self, bundle: Bundle, data: bytes, name: str, threshold: float, top_k: int | None,
        heatmap: bool, decision: dict | None,
        batcher: Callable[[torch.Tensor], np.ndarray] | None,
    ) -> dict:  # fmt: skip
        """The fields of serve's ``PredictResponse`` for one upload (``predictions``: dicts of
        label, confidence and, for boxes, box); ``BadImage`` when it cannot be decoded."""
        ...

    def export(self, bundle: Bundle, fmt: str, target: Path, model_dir: Path) -> Path:
        """Write the model in ``fmt`` (one of ``exports``) to ``target``, with its sidecar
        ``target.json`` (what goes in, what comes out); ``ValueError`` when it cannot."""
        ...

    def synth(self, args: argparse.Namespace) -> int:
        """``xvhpc demo-data --task <name>``: write a small synthetic dataset of this task."""
        ...


# -- LazyTask: a Task from a table of names, each module imported at its hook's first call --

_ROW = re.compile(r"(?P<module>\.*\w+(?:\.\w+)*):(?P<attr>\w+)(?:\((?P<args>[\w,]*)\))?")
ATTRIBUTE_HOOKS = frozenset({"shard_writer", "dataset_class", "weights"})  # the object, uncalled
OPTIONAL_HOOKS = frozenset({"pool", "crossval_section", "report_extras"})  # a default without
# a row: cross-validation refused at spec load (pool passes the folds through), no section
DERIVED = {"report_point": ("eval_dir",), "predict_chunk": ("chunk",)}  # what a row may name
# besides the hook's own arguments: run.layout.eval_dir(point), job.chunk(index)


@dataclass(frozen=True)
class Target:
    """One checked row of a ``LazyTask.hooks`` table."""

    module: str  # absolute: resolved against the task's package when the class is defined
    attr: str  # the function (for ``ATTRIBUTE_HOOKS``: the object) in it
    picks: tuple[int, ...] | None  # which of the hook's arguments it takes, in order; None: all

    def resolve(self) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)


class LazyTask:
    """A ``Task`` whose hooks are rows of the class's ``hooks`` table: hook name →
    ``"module:function"`` (module relative to the task's package as a ``from`` import would
    name it, ".ingest", "...data.shards", or absolute), or ``"module:function(argument, ...)"`` where the
    function takes only those of the hook's arguments (by the protocol's names, plus
    ``DERIVED``'s). A hook the table cannot express is a method of the subclass.

    Why a table: every task's hooks were one late import and one call each, so a step loads
    only what it uses (the login side never torch, ingest never the training code); the table
    keeps that and says it once. It is checked when the class is defined (unknown hooks or
    arguments, a hook with neither a row nor a method: ``TypeError`` naming the valid choices),
    without importing any module it names.
    """

    info: TaskInfo
    hooks: ClassVar[dict[str, str]]
    targets: ClassVar[dict[str, Target]]  # ``hooks`` checked and resolved to absolute names
    figures: dict[str, str]
    default_decision: str
    noun: str
    exports: tuple[str, ...]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "hooks" in vars(cls):  # a task's class, not a further base such as ReviewingTask
            cls.targets = _checked_table(cls)

    def _call(self, hook: str, *args: Any) -> Any:
        """The hook's row called with the arguments it picks (``args``: the hook's, in the
        protocol's order, then its ``DERIVED`` ones)."""
        target = self.targets[hook]
        n = len(args) - len(DERIVED.get(hook, ()))
        picked = args[:n] if target.picks is None else tuple(args[i] for i in target.picks)
        return target.resolve()(*picked)

    def catalog(self, source: str | Path, data: DataSpec) -> Catalog:
        return self._call("catalog", source, data)

    def process_sample(self, job: SampleJob) -> tuple[list[Record], str | None]:
        return self._call("process_sample", job)

    def shard_writer(self) -> type[ShardWriter]:
        return self.targets["shard_writer"].resolve()

    def dataset_class(self) -> type[ShardDataset]:
        return self.targets["dataset_class"].resolve()

    def build_model(self, spec: ModelSpec, num_classes: int, image_size: int) -> nn.Module:
        return self._call("build_model", spec, num_classes, image_size)

    def weights(self) -> dict[str, str]:
        return self.targets["weights"].resolve()

    def loss(
        self, spec: ExperimentSpec, train_set: ShardDataset, num_classes: int, device: torch.device
    ) -> Callable[..., torch.Tensor]:
        return self._call("loss", spec, train_set, num_classes, device)

    def validate(
        self, model: nn.Module, dataset: ShardDataset, ctx: Context, batch_size: int,
        classes: list[str],
    ) -> dict[str, float]:  # fmt: skip
        return self._call("validate", model, dataset, ctx, batch_size, classes)

    def evaluate_point(
        self, run: RunDir, point: int, data: str | None, log: logging.Logger,
        keep: dict[int, dict] | None = None,
    ) -> dict | None:  # fmt: skip
        return self._call("evaluate_point", run, point, data, log, keep)

    def pool(
        self, run: RunDir, results: dict[int, dict], found: dict[int, dict], log: logging.Logger
    ) -> dict[int, dict]:
        if "pool" not in self.targets:
            return results  # never called: the task's spec check refuses cross-validation
        return self._call("pool", run, results, found, log)

    def crossval_section(self, run: RunDir, manifest: dict) -> str:
        if "crossval_section" not in self.targets:
            return ""
        return self._call("crossval_section", run, manifest)

    def report_point(self, run: RunDir, point: int, metrics: dict) -> str:
        args = (run, point, metrics, run.layout.eval_dir(point))
        return self._call("report_point", *args)

    def report_extras(self, run: RunDir, best: int) -> str:
        if "report_extras" not in self.targets:
            return ""  # Grad-CAM heatmaps: classifiers only
        return self._call("report_extras", run, best)

    @property
    def chunk_suffix(self) -> str:
        return self.info.predictions_suffix

    def predict_chunk(
        self, bundle: Bundle, job: PredictJob, index: int, out: Path
    ) -> tuple[str, int, int]:
        args = (bundle, job, index, out, job.chunk(index))
        return self._call("predict_chunk", *args)

    def chunk_rows(
        self, text: str, items: list[dict[str, str]], meta: dict
    ) -> tuple[list[str], list[str]]:
        return self._call("chunk_rows", text, items, meta)

    def merge(
        self, out: Path, files: list[Path], job: PredictJob, meta: dict, log: logging.Logger
    ) -> int:
        return self._call("merge", out, files, job, meta, log)

    def serve_response(
        self, bundle: Bundle, data: bytes, name: str, threshold: float, top_k: int | None,
        heatmap: bool, decision: dict | None,
        batcher: Callable[[torch.Tensor], np.ndarray] | None,
    ) -> dict:  # fmt: skip
        args = (bundle, data, name, threshold, top_k, heatmap, decision, batcher)
        return self._call("serve_response", *args)

    def export(self, bundle: Bundle, fmt: str, target: Path, model_dir: Path) -> Path:
        return self._call("export", bundle, fmt, target, model_dir)

    def synth(self, args: argparse.Namespace) -> int:
        return self._call("synth", args)


class ReviewingTask(LazyTask):
    """A ``LazyTask`` with the optional ``reviews`` hook (``xvhpc predict --format``): a task
    without it must not have the attribute at all (predict asks ``hasattr``)."""

    def reviews(
        self, predictions: Path, files: dict[str, str], classes: list[str]
    ) -> tuple[list[Review], int]:
        return self._call("reviews", predictions, files, classes)


_MACHINERY = (LazyTask, ReviewingTask, object)


def _hook_arguments(cls: type[LazyTask]) -> dict[str, tuple[str, ...]]:
    """The table-driven hooks ``cls`` has, each with the argument names a row may pick."""
    return {
        name: (*tuple(inspect.signature(fn).parameters)[1:], *DERIVED.get(name, ()))
        for base in (ReviewingTask, LazyTask)
        if issubclass(cls, base)
        for name, fn in vars(base).items()
        if inspect.isfunction(fn) and not name.startswith("_")
    }


def _checked_table(cls: type[LazyTask]) -> dict[str, Target]:
    """``cls.hooks`` as targets; ``TypeError`` naming the class and the valid choices where a
    row names no hook, both a row and a method serve one hook, or a hook has neither."""
    where = f"{cls.__module__}.{cls.__qualname__}.hooks"
    hooks = _hook_arguments(cls)
    own = {h for h in hooks for k in cls.__mro__ if k not in _MACHINERY and h in vars(k)}
    targets = {}
    for hook, text in cls.hooks.items():
        if hook not in hooks:
            choices = ", ".join(closest_first(hook, sorted(hooks)))
            raise TypeError(
                f"{where}: {hook!r} is not a hook{did_you_mean(hook, sorted(hooks))} "
                f"(valid: {choices})"
            )
        if hook in own:
            raise TypeError(f"{where}: {hook!r} has a row and a method: keep one")
        targets[hook] = _target(f"{where}[{hook!r}]", text, hook, hooks[hook], cls.__module__)
    missing = sorted(set(hooks) - set(targets) - own - OPTIONAL_HOOKS)
    if missing:
        raise TypeError(f"{where}: no row (nor a method) for {', '.join(missing)}")
    return targets


def _target(where: str, text: str, hook: str, arguments: tuple[str, ...], module: str) -> Target:
    """One row: "module:attribute" or "module:function(argument, ...)", checked."""
    row = _ROW.fullmatch(text.replace(" ", ""))
    if row is None:
        raise TypeError(
            f"{where}: {text!r} is not 'module:function' or 'module:function(argument, ...)'"
        )
    picks = None
    if row["args"] is not None:
        if hook in ATTRIBUTE_HOOKS:
            raise TypeError(f"{where}: {text!r}: {hook} is the object itself, not a call")
        names = [n for n in row["args"].split(",") if n]
        for n in names:
            if n not in arguments:
                raise TypeError(
                    f"{where}: {n!r} is not an argument of {hook}{did_you_mean(n, arguments)} "
                    f"(valid: {', '.join(arguments)})"
                )
        picks = tuple(arguments.index(n) for n in names)
    package = module.rpartition(".")[0]
    return Target(importlib.util.resolve_name(row["module"], package), row["attr"], picks)


if TYPE_CHECKING:

    def _conforms(task: ReviewingTask) -> Task:
        """mypy: the table-driven hooks keep the protocol's types."""
        return task


def classifier_only(spec: ExperimentSpec) -> dict[str, bool]:
    """The settings only a classifier honours (a custom model module, a frozen backbone,
    Horovod, balanced sampling), each with whether ``spec`` sets it: the other tasks refuse
    them by ``refuse``."""
    t = spec.train
    return {
        "model.import": spec.model.import_ is not None,
        "model.freeze_backbone": spec.model.freeze_backbone,
        "train.backend": t.backend == "horovod",
        "train.balanced_sampling": t.balanced_sampling,
    }


def refuse(loaded: LoadedSpec, task: str, used: dict[str, bool]) -> list[Problem]:
    """A problem at the line of each key of ``used`` that the spec sets: ``task`` cannot do it."""
    return [
        loaded.problem(key, f"not supported with task: {task}") for key, on in used.items() if on
    ]
