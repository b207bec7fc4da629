"""The compute-side hooks of ``task: action`` (``base.Task``): what the task-blind pipeline calls."""

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
    from ...data.records import SampleJob
    from ...data.sample import Catalog
    from ...data.shards import Record, ShardWriter
    from ...models.bundle import Bundle
    from ...rundir.records import PredictJob
    from ...rundir.run import RunDir
    from ...runtime.distributed import Context
    from ...spec.schema import DataSpec, ExperimentSpec, ModelSpec


class ActionTask:
    """``task: action``: each hook imports its module late, so a step loads only what it uses."""

    info = INFO

    # -- ingest: catalog, per-sample processing, shard writer --

    def catalog(self, source: str | Path, data: DataSpec) -> Catalog:
        from .catalog import build_action_catalog

        return build_action_catalog(source, data)

    def process_sample(self, job: SampleJob) -> tuple[list[Record], str | None]:
        from .ingest import process_action

        return process_action(job)

    def shard_writer(self) -> type[ShardWriter]:
        from .ingest import ActionShardWriter

        return ActionShardWriter

    # -- train: dataset, model, loss, validation --

    def dataset_class(self) -> type[ShardDataset]:
        from .dataset import ActionDataset

        return ActionDataset

    def build_model(self, spec: ModelSpec, num_classes: int, image_size: int) -> nn.Module:
        from .models import build_clip_model

        return build_clip_model(spec, num_classes, image_size)

    def weights(self) -> dict[str, str]:
        from .models import WEIGHTS

        return WEIGHTS

    def loss(
        self, spec: ExperimentSpec, train_set: ShardDataset, num_classes: int, device: torch.device
    ) -> Callable[..., torch.Tensor]:
        from .train import action_loss

        return action_loss(spec, train_set, num_classes, device)

    def validate(
        self, model: nn.Module, dataset: ShardDataset, ctx: Context, batch_size: int,
        classes: list[str],
    ) -> dict[str, float]:  # fmt: skip
        from .train import validate_clips

        return validate_clips(model, dataset, ctx, batch_size, classes)

    # -- evaluate, cross-validation, report section --

    figures = {"tmap": "mAP (tIoU 0.3-0.7)", "tmap50": "mAP@tIoU 0.5"}
    default_decision = "segments of sliding windows joined and kept by temporal NMS"

    def evaluate_point(
        self, run: RunDir, point: int, data: str | None, log: logging.Logger,
        keep: dict[int, dict] | None = None,
    ) -> dict | None:  # fmt: skip
        from .evaluate import evaluate_point

        return evaluate_point(run, point, data, log, keep)

    def pool(
        self, run: RunDir, results: dict[int, dict], found: dict[int, dict], log: logging.Logger
    ) -> dict[int, dict]:
        """Never called: cross-validation is refused for action detection at spec load."""
        return results

    def crossval_section(self, run: RunDir, manifest: dict) -> str:
        return ""

    def report_point(self, run: RunDir, point: int, metrics: dict) -> str:
        from .report import report_section

        return report_section(run.layout.eval_dir(point), metrics)

    def report_extras(self, run: RunDir, best: int) -> str:
        return ""  # the timelines are per point (report_point)

    # -- predict, serve, export --

    noun = "action detector"

    @property
    def chunk_suffix(self) -> str:
        return self.info.predictions_suffix

    exports = ("torchscript", "onnx")

    def predict_chunk(
        self, bundle: Bundle, job: PredictJob, index: int, out: Path
    ) -> tuple[str, int, int]:
        from .predict import predict_rows

        return predict_rows(bundle, job.chunk(index), out)

    def chunk_rows(
        self, text: str, items: list[dict[str, str]], meta: dict
    ) -> tuple[list[str], list[str]]:
        from .predict import chunk_rows

        return chunk_rows(text, items)

    def merge(
        self, out: Path, files: list[Path], job: PredictJob, meta: dict, log: logging.Logger
    ) -> int:
        from .predict import merge_rows

        return merge_rows(out, files, job, meta, log)

    def serve_response(
        self, bundle: Bundle, data: bytes, name: str, threshold: float, top_k: int | None,
        heatmap: bool, decision: dict | None,
        batcher: Callable[[torch.Tensor], np.ndarray] | None,
    ) -> dict:  # fmt: skip
        from .predict import serve_response

        return serve_response(bundle, data, name, threshold, top_k)

    def export(self, bundle: Bundle, fmt: str, target: Path, model_dir: Path) -> Path:
        from .export import export_clip_model

        return export_clip_model(bundle, fmt, target)

    def synth(self, args: argparse.Namespace) -> int:
        from .synth import main

        return main(args)


TASK = ActionTask()
