"""What a task tells the rest of xvhpc: ``TaskInfo`` (torch-free names and spec checks, read on
the login side) and ``Task`` (the compute-side hooks the task-blind pipeline calls).

The split follows the login/compute seam: validating a spec or showing a run's status must not
import torch, so everything those need is plain data in ``TaskInfo``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..registry import TaskInfo

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
