"""The compute-side hooks of ``task: action`` (``base.Task``): what the task-blind pipeline calls."""

from __future__ import annotations

from ..base import LazyTask
from .info import INFO


class ActionTask(LazyTask):
    """``task: action``: each hook's module is imported at its first call (``LazyTask``)."""

    info = INFO
    figures = {"tmap": "mAP (tIoU 0.3-0.7)", "tmap50": "mAP@tIoU 0.5"}
    default_decision = "segments of sliding windows joined and kept by temporal NMS"
    noun = "action detector"
    exports = ("torchscript", "onnx")

    hooks = {  # hook → "module:function" (LazyTask)
        # ingest: catalog, per-sample processing, shard writer
        "catalog": ".catalog:build_action_catalog",
        "process_sample": ".ingest:process_action",
        "shard_writer": ".ingest:ActionShardWriter",
        # train: dataset, model, loss, validation
        "dataset_class": ".dataset:ActionDataset",
        "build_model": ".models:build_clip_model",
        "weights": ".models:WEIGHTS",
        "loss": ".train:action_loss",
        "validate": ".train:validate_clips",
        # evaluate, report section (no cross-validation: refused at spec load; the timelines
        # are per point, so no extras)
        "evaluate_point": ".evaluate:evaluate_point",
        "report_point": ".report:report_section(eval_dir, metrics)",
        # predict, serve, export (no review files)
        "predict_chunk": ".predict:predict_rows(bundle, chunk, out)",
        "chunk_rows": ".predict:chunk_rows(text, items)",
        "merge": ".predict:merge_rows",
        "serve_response": ".predict:serve_response(bundle, data, name, threshold, top_k)",
        "export": ".export:export_clip_model(bundle, fmt, target)",
        "synth": ".synth:main",
    }


TASK = ActionTask()
