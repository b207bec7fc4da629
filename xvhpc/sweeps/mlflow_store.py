"""MLflow tracking (``train.track: mlflow``) in an offline file store: ``RUN_DIR/mlruns``.

No server and no network: ``MlflowClient`` on a ``file://`` URI writes one directory per run, so
concurrent array tasks on a shared filesystem never contend for a database lock. Nothing is
forked on a compute node (a fork beside MPI and RDMA can corrupt a job): telemetry is off, runs
are created through the client (no git or environment probes), and the one probe importing
mlflow makes, ``platform.processor()`` (``uname -p`` in a subprocess on Linux), is answered from
``os.uname()`` first. One MLflow run per point (a study slot: per trial); a resumed point
continues its run without logging the steps it already logged.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..lock import waiting
from ..rundir import Layout
from ..util import read_json, write_json_atomic

STORE = "mlruns"
RUN_FILE = "mlflow.json"  # in the point's train dir: the run id and the trial it belongs to
RETRY_PAUSES_S = (0.1, 0.2, 0.4)  # a store another task is making, where locks are missing
STATUS = {"crashed": "FAILED"}  # every other outcome (done, pruned, stopped early): FINISHED


def store_uri(root: Path) -> str:
    return (Path(root).resolve() / STORE).as_uri()


def _offline() -> None:
    """What mlflow must find before its import: no telemetry, the file store allowed (MLflow 3
    asks for an opt-in), and platform's processor cached so that nothing runs ``uname -p``."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    uname = platform.uname()
    try:
        uname.__dict__.setdefault("processor", uname.machine)  # functools.cached_property slot
    except AttributeError:  # a Python whose uname_result keeps no __dict__: nothing to seed
        pass


def client(root: Path) -> Any:  # an MlflowClient
    """The run's store (the same call reads it back: ``search_runs``)."""
    _offline()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store_uri(root))


def _made(root: Path) -> Any:
    mlflow = client(root)
    mlflow.get_experiment("0")  # the first use makes the store and its default experiment
    return mlflow


def ready_client(layout: Layout) -> Any:
    """The client once the store exists. MLflow's FileStore makes ``mlruns/0/meta.yaml`` on first
    use unlocked, and array tasks starting together fail one ("Yaml file … exists as …"): the
    first makes it under a lock; where locks are missing, a lost race is tried again."""
    with waiting(layout.lock(STORE)):
        for pause in RETRY_PAUSES_S:
            with contextlib.suppress(Exception):  # "exists as" is a bare Exception
                return _made(layout.root)
            time.sleep(pause)
        return _made(layout.root)  # the last try raises what it meets


def _text(value: Any) -> str:
    return str(value)[:6000]  # MLflow's limit on a parameter value


@dataclass
class MlflowRun:
    """Rank 0's MLflow run for one point."""

    client: Any
    run_id: str
    logged_to: int  # steps up to this one were logged by an earlier attempt (a resume)

    @classmethod
    def open(
        cls, layout: Layout, point: int, params: dict[str, Any], trial: int | None
    ) -> MlflowRun:
        """Continue the point's run (same trial), or start one with the point's parameters."""
        mlflow = ready_client(layout)
        marker = layout.train_dir(point) / RUN_FILE
        saved = read_json(marker) or {}
        if saved.get("run_id") and saved.get("trial") == trial:
            run_id = str(saved["run_id"])
            mlflow.update_run(run_id, status="RUNNING")
            steps = [m.step for m in mlflow.get_metric_history(run_id, "loss")]
            return cls(mlflow, run_id, max(steps, default=-1))
        from mlflow.entities import Param

        tags = {"xvhpc.point": str(point)} | ({} if trial is None else {"xvhpc.trial": str(trial)})
        name = f"point-{point}" if trial is None else f"slot-{point}-trial-{trial}"
        run = mlflow.create_run("0", run_name=name, tags=tags)  # "0": the store's default
        run_id = run.info.run_id
        mlflow.log_batch(run_id, params=[Param(k, _text(v)) for k, v in sorted(params.items())])
        write_json_atomic(marker, {"run_id": run_id, "trial": trial})
        return cls(mlflow, run_id, -1)

    def metrics(self, values: dict[str, float], step: int) -> None:
        """One record's scalars at ``step`` (steps an earlier attempt logged are skipped)."""
        if step <= self.logged_to or not values:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), stamp, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def close(self, final: dict[str, float], outcome: str) -> None:
        """Final metrics (``final/…``), the outcome as a tag, and the run's end."""
        from mlflow.entities import Metric, RunTag

        stamp = int(time.time() * 1000)
        batch = [Metric(f"final/{k}", float(v), stamp, 0) for k, v in final.items()]
        tags = [RunTag("xvhpc.state", outcome)]
        self.client.log_batch(self.run_id, metrics=batch, tags=tags)
        self.client.set_terminated(self.run_id, status=STATUS.get(outcome, "FINISHED"))
