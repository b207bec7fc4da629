"""The compute-side hooks of ``task: detect`` (``base.Task``): what the task-blind pipeline calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import ReviewingTask
from .info import INFO

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from torch import nn

    from ...data.dataset import ShardDataset
    from ...runtime.distributed import Context
    from ...spec.schema import ExperimentSpec


class DetectTask(ReviewingTask):
    """``task: detect``: each hook's module is imported at its first call (``LazyTask``)."""

    info = INFO
    figures = {"map": "mAP@[.5:.95]", "map50": "mAP@.5"}
    default_decision = "the detector's scored boxes"
    noun = "detector"
    exports = ("torchscript", "onnx")  # no Triton model: its boxes are not a fixed tensor

    hooks = {  # hook → "module:function" (LazyTask)
        # ingest: catalog, per-sample processing, shard writer
        "catalog": ".catalog:build_detection_catalog",
        "process_sample": ".ingest:process_detection",
        "shard_writer": ".ingest:DetectionShardWriter",
        # train: dataset, model, loss and validation (below), weights
        "dataset_class": ".dataset:DetectionDataset",
        "build_model": ".models:build_detector",
        "weights": ".models:WEIGHTS",
        # evaluate, report section (no cross-validation: refused at spec load; no heatmaps)
        "evaluate_point": ".evaluate:evaluate_point",
        "report_point": ".report:report_section(eval_dir, metrics)",
        # predict, serve, export
        "predict_chunk": ".predict:predict_lines(bundle, chunk)",
        "chunk_rows": ".predict:chunk_rows(text, items)",
        "merge": ".predict:merge_lines(out, files, job, log)",
        "reviews": ".labels:reviews",
        "serve_response": ".predict:serve_response(bundle, data, name, threshold, top_k)",
        "export": ".export:export_detector(bundle, fmt, target)",
        "synth": ".synth:main",
    }

    def loss(
        self, spec: ExperimentSpec, train_set: ShardDataset, num_classes: int, device: torch.device
    ) -> Callable[..., torch.Tensor]:
        from .train import detection_loss

        return detection_loss  # one function for every spec: nothing to build

    def validate(
        self, model: nn.Module, dataset: ShardDataset, ctx: Context, batch_size: int,
        classes: list[str],
    ) -> dict[str, float]:  # fmt: skip
        from .dataset import DetectionDataset
        from .train import validate_detector

        assert isinstance(dataset, DetectionDataset)
        return validate_detector(model, dataset, ctx, batch_size, classes)


TASK = DetectTask()
