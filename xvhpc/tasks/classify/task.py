"""The compute-side hooks of ``task: classify`` (``base.Task``): what the task-blind pipeline calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import ReviewingTask
from .info import INFO

if TYPE_CHECKING:
    import logging

    from ...rundir.run import RunDir


class ClassifyTask(ReviewingTask):
    """``task: classify``: each hook's module is imported at its first call (``LazyTask``)."""

    info = INFO
    figures = {
        "accuracy": "accuracy",
        "balanced_accuracy": "balanced accuracy",
        "macro_f1": "macro F1",
        "roc_auc": "ROC-AUC",
    }
    default_decision = "most probable class"
    noun = "classifier"
    exports = ("torchscript", "onnx", "triton")  # Triton: the model with its softmax

    hooks = {  # hook → "module:function" (LazyTask)
        # ingest: catalog, per-sample processing, shard writer
        "catalog": "...data.catalog:build_catalog",
        "process_sample": ".ingest:process_sample",
        "shard_writer": "...data.shards:ShardWriter",
        # train: dataset, model, loss, validation
        "dataset_class": "...data.dataset:ShardDataset",
        "build_model": ".models:build_classifier(spec, num_classes)",
        "weights": ".models:WEIGHTS",
        "loss": ".train:classifier_loss",
        "validate": ".train:validate_classifier",
        # evaluate, cross-validation (pool: below), report section
        "evaluate_point": ".evaluate:evaluate_point",
        "crossval_section": ".report:crossval_section",
        "report_point": ".report:details_section",
        "report_extras": ".report:heatmap_sections",
        # predict, serve, export
        "predict_chunk": ".predict:predict_chunk",
        "chunk_rows": ".predict:chunk_rows",
        "merge": ".predict:merge",
        "reviews": ".labels:reviews",
        "serve_response": ".serve:serve_response",
        "export": ".export:export_classifier",
        "synth": "...data.synth:main",
    }

    def pool(
        self, run: RunDir, results: dict[int, dict], found: dict[int, dict], log: logging.Logger
    ) -> dict[int, dict]:
        from .crossval import pool
        from .evaluate import evaluate_options

        options = evaluate_options(run, next(iter(results.values()))["classes"])
        return pool(run, results, found, options, log)


TASK = ClassifyTask()
