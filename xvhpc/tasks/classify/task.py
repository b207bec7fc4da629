"""The compute-side hooks of ``task: classify`` (``base.Task``): what the task-blind pipeline calls."""

from __future__ import annotations

from .info import INFO


class ClassifyTask:
    """``task: classify``: each hook imports its module late, so a step loads only what it uses."""

    info = INFO

    # -- ingest: catalog, per-sample processing, shard writer --

    # -- train: dataset, model, loss, validation --

    # -- evaluate, cross-validation, report section --

    # -- predict, serve, export --


TASK = ClassifyTask()
