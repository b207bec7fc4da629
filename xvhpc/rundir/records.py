"""The records a run directory holds, typed: the predict job (``OUT/predict.json``) and where a
run's published model bundle is. Both sides read them (``xvhpc predict`` writes the job on the
login side; its chunk and merge steps read it on the compute side), so they live here, in the
leaf package that names every run-dir path, and neither side imports the other. A bundle's
task is read here too (``task_of``), so no driver compares a task's name to find it."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..util import read_json
from . import BUNDLE_META, MODEL

CONFIG = "predict.json"
CHUNKS = "chunks"


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
        weights = Path(self.model) / "weights.pt"
        digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else ""
        text = json.dumps([self.__dict__, digest, _decision_text(self.model)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def read(cls, out: str | Path) -> PredictJob:
        data = read_json(Path(out) / CONFIG)
        if data is None:
            raise PredictError(f"{out} has no {CONFIG}: start it with `xvhpc predict`")
        data.pop("key", None)
        return cls(**data)


def job_key(out: str | Path) -> str:
    """The key of the job in ``OUT/predict.json``: chunk files carry it in their names, so a
    chunk of an earlier, different job in OUT (or written by its still-running task) is
    never taken for one of this job."""
    return str((read_json(Path(out) / CONFIG) or {}).get("key", ""))


def _decision_text(model: str) -> str:
    path = Path(model) / "decision.json"
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
    if not (found / "meta.json").is_file():
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
    return task_of(read_json(Path(model) / BUNDLE_META, {}) or {})
