"""The compute-side hooks of ``task: segment`` (``base.Task``): what the task-blind pipeline calls."""

from __future__ import annotations

from ..base import LazyTask
from .info import INFO


class SegmentTask(LazyTask):
    """``task: segment``: each hook's module is imported at its first call (``LazyTask``)."""

    info = INFO
    figures = {"miou": "mIoU", "dice": "mean Dice"}
    default_decision = "the most probable class per pixel"
    noun = "segmenter"
    exports = ("torchscript", "onnx")

    hooks = {  # hook → "module:function" (LazyTask)
        # ingest: catalog, per-sample processing, shard writer
        "catalog": ".catalog:build_segmentation_catalog",
        "process_sample": ".ingest:process_segmentation",
        "shard_writer": ".ingest:SegmentationShardWriter",
        # train: dataset, model, loss, validation
        "dataset_class": ".dataset:SegmentationDataset",
        "build_model": ".models:build_segmenter",
        "weights": ".models:WEIGHTS",
        "loss": ".train:segmentation_loss",
        "validate": ".train:validate_segmenter",
        # evaluate, cross-validation, report section (no heatmaps: classifiers only)
        "evaluate_point": ".evaluate:evaluate_point",
        "pool": ".crossval:pool",
        "crossval_section": ".crossval:crossval_section",
        "report_point": ".report:report_section(eval_dir, metrics)",
        # predict, serve, export (no review files)
        "predict_chunk": ".predict:predict_rows(bundle, chunk, out)",
        "chunk_rows": ".predict:chunk_rows(text, items)",
        "merge": ".predict:merge_rows",
        "serve_response": ".predict:serve_response(bundle, data, name, top_k, heatmap)",
        "export": ".export:export_segmenter(bundle, fmt, target)",
        "synth": ".synth:main",
    }


TASK = SegmentTask()
