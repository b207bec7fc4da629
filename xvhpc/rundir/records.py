"""The records a run directory holds, typed: a point's training progress (``progress.json``),
the predict job (``OUT/predict.json``) and its OUT layout, and where a run's published model
bundle is. Both sides read them (``xvhpc predict`` writes the job on the
login side; its chunk and merge steps read it on the compute side), so they live here, in the
leaf package that names every run-dir path, and neither side imports the other. A bundle's
task is read here too (``task_of``), so no driver compares a task's name to find it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..util import read_json
from . import CHUNKS, HEATMAPS, MODEL, PREDICT_JOB, PREDICTIONS_STEM, SUMMARY, BundleFiles


@dataclass(frozen=True)
class Progress:
    """A training point's ``progress.json``: what rank 0 writes at each log window (and at a
    checkpoint or the end) and ``xvhpc status`` shows. The fields are the loop's; ``metrics``
    holds every other key as written (the last validation's figures: ``val_loss`` and the
    task's ``info.val_metrics``), so a new task's metrics need no field here."""

    iteration: int | None = None
    loss: float | None = None
    lr: float | None = None
    images_per_s: float | None = None
    data_wait_fraction: float | None = None
    max_iterations: int | None = None
    eta_s: float | None = None
    state: str | None = None  # running, checkpointed, done (or the tracker's outcome)
    resumed_from: int | None = None
    world_size: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The file's dict: every field in order (None as null), then ``metrics``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**out, **out.pop("metrics")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        names = {f.name for f in dataclasses.fields(cls)} - {"metrics"}
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known, metrics={k: v for k, v in data.items() if k not in names})

    def get(self, key: str) -> Any:
        """A field or a metric by its name in the file (None when absent)."""
        if key != "metrics" and key in {f.name for f in dataclasses.fields(self)}:
            return getattr(self, key)
        return self.metrics.get(key)


def read_progress(path: str | Path) -> Progress | None:
    """The progress record at ``path``; None when there is none yet (a damaged file is a
    ``CorruptFile``, as ``read_json`` says)."""
    data = read_json(Path(path))
    return Progress.from_json(data) if isinstance(data, dict) and data else None


@dataclass(frozen=True)
class PredictLayout:
    """The OUT directory of ``xvhpc predict``: the job, its chunk files, the merged predictions
    (``predictions<suffix>``, the suffix the task's ``TaskInfo.predictions_suffix``), the
    summary and the heatmaps. Pure path arithmetic, like ``Layout``."""

    out: Path

    @property
    def config(self) -> Path:
        return self.out / PREDICT_JOB

    @property
    def chunks(self) -> Path:
        return self.out / CHUNKS

    def chunk(self, index: int, key: str, suffix: str) -> Path:
        """Chunk ``index`` of the job with ``key`` (an earlier job's chunks have another)."""
        return self.chunks / f"chunk-{index:05d}-{key}{suffix}"

    def predictions(self, suffix: str) -> Path:
        return self.out / f"{PREDICTIONS_STEM}{suffix}"

    @property
    def summary(self) -> Path:
        return self.out / SUMMARY

    @property
    def heatmaps(self) -> Path:
        return self.out / HEATMAPS

    def review(self, fmt: str) -> Path:
        """The pre-annotations for review of ``xvhpc predict --format FMT``: OUT/<fmt>.json
        (labelstudio.json: Label Studio's task import; coco.json: COCO, which CVAT imports)."""
        return self.out / f"{fmt}.json"


class PredictError(Exception):
    """The model or the input source cannot be used; ``str()`` names the file and why."""


class ChunkDamaged(Exception):
    """A predict chunk file is not a chunk of its task's format; ``str()`` says how."""


@dataclass(frozen=True)
class PredictJob:
    """What ``xvhpc predict`` was asked to do, as written to ``predict.json``."""

    model: str  # absolute model bundle directory
    source: str  # absolute
    inputs: list[dict[str, str]]  # {"path": absolute, "rel": as shown}
    skipped: list[dict[str, str]]  # found by the reader but unusable before decoding
    chunk_size: int
    batch_size: int
    heatmaps: bool

    @property
    def chunks(self) -> int:
        return max(1, math.ceil(len(self.inputs) / self.chunk_size))

    def chunk(self, index: int) -> list[dict[str, str]]:
        return self.inputs[index * self.chunk_size : (index + 1) * self.chunk_size]

    def key(self) -> str:
        """Changes whenever a chunk's result would: finished chunks of another job are stale."""
        weights = BundleFiles(Path(self.model)).weights
        digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else ""
        text = json.dumps([self.__dict__, digest, _decision_text(self.model)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def read(cls, out: str | Path) -> PredictJob:
        data = read_json(PredictLayout(Path(out)).config)
        if data is None:
            raise PredictError(f"{out} has no {PREDICT_JOB}: start it with `xvhpc predict`")
        data.pop("key", None)
        return cls(**data)


def job_key(out: str | Path) -> str:
    """The key of the job in ``OUT/predict.json``: chunk files carry it in their names, so a
    chunk of an earlier, different job in OUT (or written by its still-running task) is
    never taken for one of this job."""
    return str((read_json(PredictLayout(Path(out)).config) or {}).get("key", ""))


def _decision_text(model: str) -> str:
    path = BundleFiles(Path(model)).decision
    return path.read_text() if path.is_file() else ""


def resolve_model(run_dir: str | Path) -> Path:
    """Where a run's bundle is: RUN_DIR/model when the run published one, else RUN_DIR itself
    (a bundle directory given directly). Serve, export and predict accept either, so the
    one rule lives here; nothing is checked (loading the bundle says what is missing)."""
    run = Path(run_dir)
    return run / MODEL if (run / MODEL).is_dir() else run


def model_dir(run_dir: str | Path) -> Path:
    """A run directory's published bundle (RUN_DIR/model), or a bundle directory itself."""
    run = Path(run_dir).resolve()
    found = resolve_model(run)
    if not BundleFiles(found).exists():
        raise PredictError(f"{run} holds no trained model (no model/meta.json); train first")
    return found


def task_of(meta: dict) -> str:
    """The task of a bundle's ``meta.json`` (or a classifier's ``metrics.json`` head): its
    top-level ``task``, else the spec's; bundles written before either name no task and are
    classifiers. The one place a driver learns the task of a model it did not train."""
    return str(meta.get("task") or (meta.get("spec") or {}).get("task") or "classify")


def model_task(model: str | Path) -> str:
    """The task of the bundle in directory ``model`` (torch-free: only its meta.json is read;
    an unreadable or missing meta.json reads as a classifier, as before)."""
    return task_of(read_json(BundleFiles(Path(model)).meta, {}) or {})
