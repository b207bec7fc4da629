"""What training tells the world about one point: TensorBoard scalars and hparams, a study's
intermediate values and pruning, early stopping.

``xvhpc train`` calls a ``PointTracker`` at a handful of places. Rank 0 alone talks to the study
and writes event files; every stop decision is summed over ranks (as the walltime stop flag
is), so all ranks leave the loop at the same iteration and no collective is left waiting.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..registry import task_info
from ..rundir import Layout
from ..runtime.distributed import Context, all_reduce_sum
from ..spec import ExperimentSpec, SpecError, point_spec
from ..util import write_json_atomic
from .heartbeat import Heartbeat, heartbeat_path
from .mlflow_store import MlflowRun
from .study import (
    Binding,
    Objective,
    bind_slot,
    fail_unbound_orphans,
    is_study,
    objective,
    open_study,
    report,
    tell,
)

T = TypeVar("T")
CONTINUE, PRUNED, STOPPED_EARLY = 0, 1, 2
OUTCOMES = {CONTINUE: "done", PRUNED: "pruned", STOPPED_EARLY: "stopped_early"}
# what each record may hold; validation rounds add val_loss and the task's metrics (TaskInfo)
SCALARS = ("loss", "lr", "images_per_s", "data_wait_fraction", "val_loss")
BASE_HPARAMS = (
    "train.learning_rate",
    "train.batch_size",
    "train.optimizer",
    "train.weight_decay",
    "model.arch",
)


def broadcast(ctx: Context, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a study's answer reaches ranks that never opened it)."""
    if ctx.world_size == 1:
        return obj
    if ctx.backend == "horovod":
        import horovod.torch as hvd

        return hvd.broadcast_object(obj, root_rank=0)
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def dotted(spec: ExperimentSpec, key: str) -> Any:
    node: Any = spec.model_dump(by_alias=True)
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def no_improvement(values: list[float], patience: int, goal: Objective) -> bool:
    """True when none of the last ``patience`` rounds beat the best round before them."""
    if len(values) <= patience:
        return False
    best = values[0]
    for v in values[1:-patience]:
        if goal.better(v, best) or math.isnan(best):
            best = v
    return not any(goal.better(v, best) for v in values[-patience:])


@dataclass
class PointTracker:
    """One point's (or study slot's) hooks; see the module docstring."""

    layout: Layout
    point: int
    spec: ExperimentSpec  # the point's spec (a study slot: its trial's parameters applied)
    ctx: Context
    params: dict[str, Any]  # the swept values of this point
    binding: Binding | None = None  # study slots only
    goal: Objective | None = None  # study slots: the study's objective
    study: Any = None  # rank 0 of a study slot only
    writer: Any = None
    heartbeat: Heartbeat | None = None  # rank 0 of a study slot training its trial
    mlflow: MlflowRun | None = None  # rank 0 with train.track: mlflow
    outcome: str = "done"
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("xvhpc"))

    @classmethod
    def open(cls, run: Any, point: int, ctx: Context, log: logging.Logger) -> PointTracker:
        """A grid point as compiled, or a study slot bound to its trial (rank 0 asks or resumes
        it and writes ``train/<slot>/trial.json``; the other ranks receive it)."""
        layout = Layout(run.root)
        if not is_study(run.spec):
            params = run.plan["points"][point]
            return cls(layout, point, run.point(point), ctx, params, log=log)
        study = binding = heartbeat = None
        if ctx.is_main:
            study = open_study(run.root, run.spec, point)
            for number in fail_unbound_orphans(run.root, study):
                log.warning("trial %d: orphaned before any slot took it; marked FAIL", number)
            binding = bind_slot(study, point, run.spec.sweep)
            if not binding.finished:
                path = heartbeat_path(run.root, binding.trial)
                heartbeat = Heartbeat(path).start(binding.trial, point)
            _set_aside_other_trial(layout, point, binding, log)
            write_json_atomic(
                layout.trial(point),
                {"trial": binding.trial, "slot": point, "params": binding.params},
            )
        binding = broadcast(ctx, binding)
        log.info(
            "slot %d: trial %d %s %s", point, binding.trial, binding.state.lower(), binding.params
        )
        try:
            spec = point_spec(run.loaded, binding.params)
        except SpecError:  # its parameters never validate: a failed trial, not a live one
            cls(
                layout,
                point,
                run.spec,
                ctx,
                binding.params,
                binding,
                study=study,
                heartbeat=heartbeat,
            ).crashed()
            raise
        goal = objective(run.spec)
        return cls(
            layout,
            point,
            spec,
            ctx,
            binding.params,
            binding,
            goal,
            study,
            heartbeat=heartbeat,
            log=log,
        )

    @property
    def finished(self) -> bool:
        """A study slot whose trial already finished: nothing to train (a rerun repeats none)."""
        return self.binding is not None and self.binding.finished

    # ------------------------------------------------------------- TensorBoard, MLflow
    def start(self, iteration: int) -> None:
        """Rank 0 opens what ``train.track`` asks for: the event writer (a resume hides events
        past the checkpoint: they come again) and the point's MLflow run."""
        if not self.ctx.is_main:
            return
        if "mlflow" in self.spec.train.track:
            trial = self.binding.trial if self.binding is not None else None
            params = self.hparam_values()
            self.mlflow = self._mlflow(MlflowRun.open, self.layout, self.point, params, trial)
        if "tensorboard" not in self.spec.train.track:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # a site environment without the tensorboard package
            self.log.warning("no TensorBoard event files: %s (pip install tensorboard)", exc)
            return
        self.writer = SummaryWriter(
            log_dir=str(self.layout.tensorboard(self.point)),
            purge_step=iteration if iteration > 0 else None,
        )

    def _mlflow(self, call: Callable[..., T], *args: Any) -> T | None:
        """``call(*args)``; a tracking failure is a warning and MLflow is off for the rest of the
        run: tracking never ends a training run."""
        try:
            return call(*args)
        except Exception as exc:  # MLflow raises bare Exceptions too
            self.log.warning("point %d: MLflow tracking off: %s", self.point, exc)
            self.mlflow = None
            return None

    def scalars(self, record: dict[str, Any]) -> None:
        """Rank 0: the record's known scalars at its iteration."""
        names = (*SCALARS, *task_info(self.spec.task).val_metrics)
        values = {k: v for k in names if isinstance(v := record.get(k), int | float)}
        if self.mlflow is not None:
            self._mlflow(self.mlflow.metrics, values, record["iteration"])
        if self.writer is None:
            return
        for key, value in values.items():
            self.writer.add_scalar(key, value, record["iteration"])
        self.writer.flush()

    def hparam_values(self) -> dict[str, bool | int | float | str]:
        """The point's parameters (the usual ones and the swept ones) as scalars; the trial."""
        values = {k: dotted(self.spec, k) for k in BASE_HPARAMS} | dict(self.params)
        clean = {
            k: v if isinstance(v, bool | int | float | str) else json.dumps(v)
            for k, v in values.items()
        }
        if self.binding is not None:
            clean["trial"] = self.binding.trial
        return clean

    def _hparams(self, final: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        clean = self.hparam_values()
        metrics = {f"hparams/{k}": v for k, v in final.items() if not math.isnan(v)}
        for summary in hparams(clean, metrics):
            self.writer.file_writer.add_summary(summary)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value)

    # ------------------------------------------------------------- decisions
    def after_validation(self, iteration: int, max_iter: int) -> bool:
        """After a validation round: report to the study, ask its pruner, check early stopping.
        True (on every rank) when training should stop now."""
        code = self._decide(iteration, max_iter) if self.ctx.is_main else CONTINUE
        if self.ctx.world_size > 1:
            code = round(all_reduce_sum(self.ctx, [float(code)])[0])
        self.outcome = OUTCOMES[code]
        if code == PRUNED:
            self.log.info("slot %d: trial pruned at iteration %d", self.point, iteration)
        elif code == STOPPED_EARLY:
            self.log.info("early stop at iteration %d: no improvement", iteration)
        return code != CONTINUE

    def _decide(self, iteration: int, max_iter: int) -> int:
        rounds = self._validation_rounds()
        if self.goal is not None and self.binding is not None and rounds and iteration < max_iter:
            value = float(rounds[-1][self.goal.metric])
            if report(self.study, self.binding.trial, value, iteration):
                return PRUNED
        stop = self.spec.train.early_stop
        if stop is not None:
            goal = Objective(stop.metric, task_info(self.spec.task).direction(stop.metric))
            if no_improvement([r[stop.metric] for r in rounds], stop.patience, goal):
                return STOPPED_EARLY
        return CONTINUE

    def _validation_rounds(self) -> list[dict[str, Any]]:
        """This run's validation records, oldest first, from its metrics log (trimmed to the
        checkpoint on resume, so early stopping survives a requeue without new state)."""
        path = self.layout.metrics_log(self.point)
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        return [r for r in rows if "val_loss" in r and "event" not in r]

    # ------------------------------------------------------------- the end
    def finish(self) -> None:
        """Rank 0: tell the study the outcome (best objective over rounds), write hparams."""
        if not self.ctx.is_main:
            return
        rounds = self._validation_rounds()
        names = ("val_loss", *task_info(self.spec.task).val_metrics)
        final = {k: float(rounds[-1][k]) for k in names if rounds and k in rounds[-1]}
        if self.goal is not None and self.binding is not None:
            best = _best([float(r[self.goal.metric]) for r in rounds], self.goal)
            if best is not None:
                final[f"best_{self.goal.metric}"] = best
            state = "PRUNED" if self.outcome == "pruned" else "COMPLETE"
            tell(self.study, self.binding.trial, state, best)
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.mlflow is not None:
            clean = {k: v for k, v in final.items() if not math.isnan(v)}
            self._mlflow(self.mlflow.close, clean, self.outcome)
        if self.writer is not None:
            self._hparams(final)
            self.writer.close()

    def crashed(self) -> None:
        """Rank 0: a trial whose training raised is FAIL (a rerun asks the slot a new trial)."""
        if self.ctx.is_main and self.binding is not None and not self.binding.finished:
            tell(self.study, self.binding.trial, "FAIL")
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.mlflow is not None:
            self._mlflow(self.mlflow.close, {}, "crashed")
        if self.writer is not None:
            self.writer.close()


def _best(values: list[float], goal: Objective) -> float | None:
    best = None
    for v in values:
        if best is None or goal.better(v, best):
            best = v
    return best


def _set_aside_other_trial(
    layout: Layout, slot: int, binding: Binding, log: logging.Logger
) -> None:
    """A slot's directory holding another trial's checkpoint (that trial failed) is renamed, not
    resumed with new parameters and not deleted."""
    from ..util import read_json

    previous = read_json(layout.trial(slot))
    if previous is None or previous.get("trial") == binding.trial:
        return
    aside = layout.train_dir(slot).with_name(f"{slot}.trial-{previous['trial']}")
    layout.train_dir(slot).rename(aside)
    log.warning(
        "slot %d: trial %s failed earlier; its files moved to %s", slot, previous["trial"], aside
    )
