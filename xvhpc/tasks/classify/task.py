"""The compute-side hooks of ``task: classify`` (``base.Task``): what the task-blind pipeline calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .info import INFO

if TYPE_CHECKING:
    import argparse
    import logging
    from collections.abc import Callable
    from pathlib import Path

    import numpy as np
    import torch
    from torch import nn

    from ...data.dataset import ShardDataset
    from ...data.labelstudio import Review
    from ...data.records import SampleJob
    from ...data.sample import Catalog
    from ...data.shards import Record, ShardWriter
    from ...models.bundle import Bundle
    from ...rundir.records import PredictJob
    from ...rundir.run import RunDir
    from ...runtime.distributed import Context
    from ...spec.schema import DataSpec, ExperimentSpec, ModelSpec


class ClassifyTask:
    """``task: classify``: each hook imports its module late, so a step loads only what it uses."""

    info = INFO

    # -- ingest: catalog, per-sample processing, shard writer --

    def catalog(self, source: str | Path, data: DataSpec) -> Catalog:
        from ...data.catalog import build_catalog

        return build_catalog(source, data)

    def process_sample(self, job: SampleJob) -> tuple[list[Record], str | None]:
        from .ingest import process_sample

        return process_sample(job)

    def shard_writer(self) -> type[ShardWriter]:
        from ...data.shards import ShardWriter

        return ShardWriter

    # -- train: dataset, model, loss, validation --

    def dataset_class(self) -> type[ShardDataset]:
        from ...data.dataset import ShardDataset

        return ShardDataset

    def build_model(self, spec: ModelSpec, num_classes: int, image_size: int) -> nn.Module:
        from .models import build_classifier

        return build_classifier(spec, num_classes)

    def weights(self) -> dict[str, str]:
        from .models import WEIGHTS

        return WEIGHTS

    def loss(
        self, spec: ExperimentSpec, train_set: ShardDataset, num_classes: int, device: torch.device
    ) -> Callable[..., torch.Tensor]:
        from .train import classifier_loss

        return classifier_loss(spec, train_set, num_classes, device)

    def validate(
        self, model: nn.Module, dataset: ShardDataset, ctx: Context, batch_size: int,
        classes: list[str],
    ) -> dict[str, float]:  # fmt: skip
        from .train import validate_classifier

        return validate_classifier(model, dataset, ctx, batch_size, classes)

    # -- evaluate, cross-validation, report section --

    figures = {
        "accuracy": "accuracy",
        "balanced_accuracy": "balanced accuracy",
        "macro_f1": "macro F1",
        "roc_auc": "ROC-AUC",
    }
    default_decision = "most probable class"

    def evaluate_point(
        self, run: RunDir, point: int, data: str | None, log: logging.Logger,
        keep: dict[int, dict] | None = None,
    ) -> dict | None:  # fmt: skip
        from .evaluate import evaluate_point

        return evaluate_point(run, point, data, log, keep)

    def pool(
        self, run: RunDir, results: dict[int, dict], found: dict[int, dict], log: logging.Logger
    ) -> dict[int, dict]:
        from .crossval import pool
        from .evaluate import evaluate_options

        options = evaluate_options(run, next(iter(results.values()))["classes"])
        return pool(run, results, found, options, log)

    def crossval_section(self, run: RunDir, manifest: dict) -> str:
        from .report import crossval_section

        return crossval_section(run, manifest)

    def report_point(self, run: RunDir, point: int, metrics: dict) -> str:
        from .report import details_section

        return details_section(run, point, metrics)

    def report_extras(self, run: RunDir, best: int) -> str:
        from .report import heatmap_sections

        return heatmap_sections(run, best)

    # -- predict, serve, export --

    noun = "classifier"

    @property
    def chunk_suffix(self) -> str:
        return self.info.predictions_suffix

    exports = ("torchscript", "onnx", "triton")  # Triton: the model with its softmax

    def predict_chunk(
        self, bundle: Bundle, job: PredictJob, index: int, out: Path
    ) -> tuple[str, int, int]:
        from .predict import predict_chunk

        return predict_chunk(bundle, job, index, out)

    def chunk_rows(
        self, text: str, items: list[dict[str, str]], meta: dict
    ) -> tuple[list[str], list[str]]:
        from .predict import chunk_rows

        return chunk_rows(text, items, meta)

    def merge(
        self, out: Path, files: list[Path], job: PredictJob, meta: dict, log: logging.Logger
    ) -> int:
        from .predict import merge

        return merge(out, files, job, meta, log)

    def reviews(
        self, predictions: Path, files: dict[str, str], classes: list[str]
    ) -> tuple[list[Review], int]:
        from .labels import reviews

        return reviews(predictions, files, classes)

    def serve_response(
        self, bundle: Bundle, data: bytes, name: str, threshold: float, top_k: int | None,
        heatmap: bool, decision: dict | None,
        batcher: Callable[[torch.Tensor], np.ndarray] | None,
    ) -> dict:  # fmt: skip
        from .serve import serve_response

        return serve_response(bundle, data, name, threshold, top_k, heatmap, decision, batcher)

    def export(self, bundle: Bundle, fmt: str, target: Path, model_dir: Path) -> Path:
        from .export import export_classifier

        return export_classifier(bundle, fmt, target, model_dir)

    def synth(self, args: argparse.Namespace) -> int:
        from ...data.synth import main

        return main(args)


TASK = ClassifyTask()
