"""``xvhpc train``: data-parallel transfer learning of one sweep point from HDF5 shards.

Shaped like torchvision's references/classification/train.py: ``main`` → ``train``, which runs
the pieces in order — ``prepare`` (data, model, optimizer), ``resume`` (a checkpoint, if any),
``run_loop`` (``train_one_step``, then per iteration: log, ``validate``, and
``checkpoint_or_requeue``) and ``finish``. Rank 0 logs and saves; no global state is mutated.
Task-blind: the spec's task gives the dataset, model, loss and validation (``tasks/<name>/``,
the train hooks), and its ``TaskInfo.selection`` metric chooses the best checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .. import lock
from ..data.dataset import RankBatches, ShardDataset
from ..data.manifest import manifest_preprocessing
from ..data.roles import role_index
from ..models.bundle import publish_model, save_bundle
from ..models.safeload import UnloadableFile
from ..models.weights import MissingWeights
from ..models.zoo import memory_format
from ..registry import load_task
from ..rundir import REQUEUE_EXIT, REQUEUE_MARKER_ENV, Layout
from ..rundir.records import Progress
from ..rundir.run import RunDir
from ..runtime import compat, stopsignals
from ..runtime.checkpoint import checkpoint_best, load_checkpoint, restore_rng, save_checkpoint
from ..runtime.distributed import Context, all_reduce_sum, any_rank, setup, teardown
from ..spec import ExperimentSpec
from ..sweeps.tracker import PointTracker
from ..tasks.base import Task
from ..util import at_least, open_append, read_json, write_json_atomic, write_text_atomic
from .common import setup_logging, want_bar

STOP_SIGNALS = stopsignals.STOP_SIGNALS


class TrainError(Exception):
    """The run dir is not ready for training; ``str()`` says what to run first."""


@dataclass
class StopFlag:
    """Set by walltime/preemption signals; checked once per iteration on every rank."""

    signal: int | None = None
    previous: dict = field(default_factory=dict)

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)
        self.signal = self.signal or stopsignals.held()  # one that came during start-up

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def lr_factor(spec: ExperimentSpec, max_iter: int):
    """Multiplier of the base learning rate at iteration ``it`` (warmup, then the schedule)."""
    t = spec.train

    def factor(it: int) -> float:
        if t.warmup_iterations and it < t.warmup_iterations:
            return (it + 1) / t.warmup_iterations
        if t.schedule == "cosine":
            span = max(1, max_iter - t.warmup_iterations)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (it - t.warmup_iterations) / span)))
        if t.schedule == "step":
            return t.gamma ** (it // t.step_size)
        return 1.0

    return factor


def make_optimizer(model: nn.Module, spec: ExperimentSpec, world: int) -> torch.optim.Optimizer:
    t = spec.train
    lr = t.learning_rate * (world if t.scale_lr else 1)
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)


def append_metrics(path: Path, record: dict) -> None:
    with open_append(path) as fh:  # never through a link planted at its path
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def trim_metrics(path: Path, iteration: int) -> None:
    """After a resume, forget log lines past the checkpoint (they will be written again)."""
    if not path.exists():
        return
    lines = [
        ln
        for ln in path.read_text().splitlines()
        if ln and json.loads(ln).get("iteration", 0) <= iteration
    ]
    write_text_atomic(path, "".join(ln + "\n" for ln in lines))


# ----------------------------------------------------------------- setup
@dataclass
class Job:
    """What one training run of one sweep point reads and writes (fixed once prepared)."""

    layout: Layout
    point: int
    spec: ExperimentSpec
    classes: list[str]
    preprocessing: dict[str, Any]
    train_set: ShardDataset
    val_set: ShardDataset
    batches: RankBatches
    max_iter: int
    single_point: bool
    task: Task  # the spec's task: dataset, model, loss and validation
    tracker: PointTracker | None = None  # TensorBoard, study reports, early stop (xvhpc/sweeps)


@dataclass
class Parts:
    """The model and what updates it (the optimizer may be wrapped for Horovod)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Any  # torch.amp.GradScaler (torch.cuda.amp.GradScaler on older torch)
    loss: Callable[
        ..., torch.Tensor
    ]  # the task's: (net, images, labels, ctx, amp_dtype, generator)
    amp_dtype: torch.dtype | None  # autocast dtype (compat.amp_dtype); None: full precision


@dataclass
class Position:
    """Where the run stands: mutated by the loop, saved in checkpoints."""

    start: int = 0
    iteration: int = 0
    best: float | None = None  # the best selection metric so far (None: no validation yet)
    resumed_from: int | None = None
    last_validation: dict = field(default_factory=dict)


def prepare_job(
    run: RunDir, point: int, spec: ExperimentSpec, ctx: Context, max_iter_override: int | None
) -> Job:
    """Manifest, datasets and this rank's batches; ``TrainError`` before ingest finished."""
    layout = Layout(run.root)
    manifest = read_json(layout.manifest)
    if manifest is None or "error" in manifest:
        raise TrainError(f"{layout.manifest} missing or failed; run ingest first")
    t = spec.train
    split = spec.data.split
    task = load_task(spec.task)
    train_index = role_index(run.root, split, "train")
    val_index = role_index(run.root, split, "select")  # chooses the checkpoint, early stop
    if split.select and not len(val_index):
        raise TrainError(
            f"data.split.select is {split.select} but no record of {run.shard_dir} chooses "
            f"point {point}'s checkpoint (the shards have no select split): ingest again"
        )
    batches = RankBatches(
        len(train_index),
        t.batch_size,
        ctx.rank,
        ctx.world_size,
        t.seed,
        weights=(1.0 / np.bincount(train_index.labels)[train_index.labels])
        if t.balanced_sampling
        else None,
        # block=1: samples in random order. Blocks of consecutive rows read faster but put
        # neighbours (same class, an image and its augmented copies) into one batch.
    )
    return Job(
        layout=layout,
        point=point,
        spec=spec,
        classes=manifest["classes"],
        preprocessing=manifest_preprocessing(manifest, spec.data),
        train_set=task.dataset_class()(train_index, cache_in_memory=t.cache_in_memory),
        val_set=task.dataset_class()(val_index),
        batches=batches,
        max_iter=max_iter_override or t.max_iterations or (t.epochs or 1) * batches.steps_per_epoch,
        single_point=len(run.plan["points"]) == 1,
        task=task,
    )


def build_parts(job: Job, ctx: Context) -> Parts:
    """Model (identical initial weights on every rank), optimizer, schedule, scaler, loss."""
    t = job.spec.train
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    model = job.task.build_model(job.spec.model, len(job.classes), job.spec.data.image_size)
    model = model.to(ctx.device)
    model = model.to(memory_format=memory_format(job.spec, ctx.device))
    optimizer = make_optimizer(model, job.spec, ctx.world_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(job.spec, job.max_iter))
    amp_dtype = compat.amp_dtype(t.amp, ctx.device.type)
    scaler = compat.grad_scaler(enabled=amp_dtype == torch.float16)  # bfloat16 needs no scaling
    loss = job.task.loss(job.spec, job.train_set, len(job.classes), ctx.device)
    return Parts(model, optimizer, scheduler, scaler, loss, amp_dtype=amp_dtype)


# ----------------------------------------------------------------- resume
def resume(job: Job, parts: Parts, ctx: Context, log: logging.Logger) -> Position:
    """Restore the checkpoint if there is one (every rank); rank 0 trims the metrics log."""
    path = job.layout.checkpoint(job.point)
    pos = Position()
    if path.exists():
        state = load_checkpoint(path, map_location=ctx.device)
        try:
            parts.model.load_state_dict(state["model"])
            parts.optimizer.load_state_dict(state["optimizer"])
            parts.scheduler.load_state_dict(state["scheduler"])
            parts.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise UnloadableFile(
                f"{path}: does not match this run's model or optimizer ({exc}); delete it to "
                "start this point over"
            ) from None
        restore_rng(state)
        it = state["iteration"]
        pos = Position(it, it, checkpoint_best(state), it)
        log.info("resumed from checkpoint at iteration %d", pos.start)
    if ctx.is_main:
        job.layout.train_dir(job.point).mkdir(parents=True, exist_ok=True)
        trim_metrics(job.layout.metrics_log(job.point), pos.start)
        if pos.resumed_from is not None:
            append_metrics(
                job.layout.metrics_log(job.point), {"iteration": pos.start, "event": "resumed"}
            )
    return pos


def distribute(parts: Parts, ctx: Context) -> nn.Module:
    """The module the loop calls: DDP over ranks, Horovod's optimizer, or the model itself."""
    if ctx.backend == "horovod":
        import horovod.torch as hvd

        parts.optimizer = hvd.DistributedOptimizer(
            parts.optimizer, named_parameters=parts.model.named_parameters()
        )
        hvd.broadcast_parameters(parts.model.state_dict(), root_rank=0)
        return parts.model
    if ctx.world_size > 1:
        return DistributedDataParallel(
            parts.model,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            gradient_as_bucket_view=True,
        )
    return parts.model


def make_loader(job: Job, start: int, ctx: Context) -> DataLoader:
    """This rank's batches from iteration ``start`` on (the data position of a resume)."""
    t = job.spec.train
    job.batches.start = start
    start_method = os.environ.get("XVHPC_MP_START_METHOD")
    return DataLoader(
        job.train_set,
        batch_sampler=job.batches,
        collate_fn=getattr(job.train_set, "collate", None),  # detection: targets as a list
        num_workers=t.workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if t.workers else None,
        multiprocessing_context=start_method if t.workers and start_method else None,
    )


# ----------------------------------------------------------------- loop
@dataclass
class Window:
    """Loss and throughput since the last log line."""

    loss: float = 0.0
    steps: float = 0.0
    images: int = 0
    wait: float = 0.0
    time: float = 0.0

    def add(self, loss: float, images: int, waited: float, took: float) -> None:
        self.loss += loss
        self.steps += 1
        self.images += images
        self.wait += waited
        self.time += took


def due(iteration: int, every: int, max_iter: int) -> bool:
    return iteration % every == 0 or iteration == max_iter


def log_window(
    job: Job, parts: Parts, pos: Position, window: Window, ctx: Context, t_start: float
) -> None:
    """One metrics line (summed over ranks) and the progress file ``xvhpc status`` reads."""
    total_loss, n, imgs = all_reduce_sum(ctx, [window.loss, window.steps, window.images])
    rate = imgs / max(window.time, 1e-9) if window.time else 0.0
    record = {
        "iteration": pos.iteration,
        "loss": total_loss / max(n, 1),
        "lr": parts.optimizer.param_groups[0]["lr"],
        "images_per_s": rate,
        "data_wait_fraction": window.wait / max(window.time, 1e-9),
    }
    if not ctx.is_main:
        return
    append_metrics(job.layout.metrics_log(job.point), record)
    if job.tracker is not None:
        job.tracker.scalars(record)
    elapsed = time.monotonic() - t_start
    eta = elapsed / max(pos.iteration - pos.start, 1) * (job.max_iter - pos.iteration)
    progress = Progress(
        iteration=pos.iteration,
        loss=record["loss"],
        lr=record["lr"],
        images_per_s=rate,
        data_wait_fraction=record["data_wait_fraction"],
        max_iterations=job.max_iter,
        eta_s=round(eta, 1),
        state="running",
        resumed_from=pos.resumed_from,
        world_size=ctx.world_size,
    )
    write_json_atomic(job.layout.progress(job.point), progress.to_json())


def validate(job: Job, parts: Parts, pos: Position, ctx: Context) -> None:
    """Validation metrics (the task's); rank 0 logs them and saves the bundle when the task's
    selection metric improved (every time when no record chooses: the bundle holds the last
    weights)."""
    t = job.spec.train
    metrics = job.task.validate(parts.model, job.val_set, ctx, t.batch_size, job.classes)
    pos.last_validation = metrics
    if not ctx.is_main:
        return
    append_metrics(job.layout.metrics_log(job.point), {"iteration": pos.iteration, **metrics})
    if job.tracker is not None:
        job.tracker.scalars({"iteration": pos.iteration, **metrics})
    bundle = job.layout.point_model(job.point)
    unchosen = len(job.val_set) == 0  # a final fit without a select split: its last weights
    score = metrics[job.task.info.selection]
    improved = job.task.info.better(score, pos.best)
    if improved:
        pos.best = score
    if improved or not bundle.exists() or unchosen:
        save_bundle(
            bundle,
            parts.model,
            job.spec,
            job.classes,
            job.preprocessing,
            pos.iteration,
            metrics,
        )


def checkpoint_or_requeue(
    job: Job, parts: Parts, pos: Position, stopping: bool, ctx: Context, log: logging.Logger
) -> int | None:
    """Checkpoint when due or stopping (rank 0); on a stop signal before the end, mark the
    progress file and return ``REQUEUE_EXIT`` for the job script to requeue."""
    if due(pos.iteration, job.spec.train.checkpoint_every, job.max_iter) or stopping:
        if ctx.is_main:
            save_checkpoint(
                job.layout.checkpoint(job.point),
                {
                    "model": parts.model.state_dict(),
                    "optimizer": parts.optimizer.state_dict(),
                    "scheduler": parts.scheduler.state_dict(),
                    "scaler": parts.scaler.state_dict(),
                    "iteration": pos.iteration,
                    "best": pos.best,
                },
            )
    if not stopping or pos.iteration >= job.max_iter:
        return None
    log.warning(
        "signal received: checkpoint written at iteration %d; exiting %d for requeue",
        pos.iteration,
        REQUEUE_EXIT,
    )
    if ctx.is_main:
        progress = job.layout.progress(job.point)
        write_json_atomic(
            progress,
            {**(read_json(progress) or {}), "state": "checkpointed", "iteration": pos.iteration},
        )
        # written last: the job script requeues on it whatever exit code the launcher returns
        write_json_atomic(job.layout.requeue_marker(job.point), {"iteration": pos.iteration})
    return REQUEUE_EXIT


def run_loop(
    job: Job, parts: Parts, net: nn.Module, pos: Position, ctx: Context, log: logging.Logger
) -> int | None:
    """Iterations ``pos.start`` → ``max_iter``; ``REQUEUE_EXIT`` when a stop signal came."""
    t = job.spec.train
    loader = make_loader(job, pos.start, ctx)
    stop = StopFlag()
    stop.install()
    bar = None
    if ctx.is_main and want_bar():
        from tqdm import tqdm

        bar = tqdm(
            total=job.max_iter, initial=pos.start, desc=f"train point {job.point}", unit="it"
        )
    window = Window()
    t_start = time.monotonic()
    try:
        data_iter = iter(loader)
        net.train()
        while pos.iteration < job.max_iter:
            tick = time.monotonic()
            images, labels = next(data_iter)
            waited = time.monotonic() - tick
            loss = train_one_step(net, images, labels, parts, ctx, job.spec, pos.iteration)
            parts.scheduler.step()
            pos.iteration += 1
            window.add(loss, len(labels), waited, time.monotonic() - tick)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
            if due(pos.iteration, t.log_every, job.max_iter):
                log_window(job, parts, pos, window, ctx, t_start)
                window = Window()
            if due(pos.iteration, t.val_every, job.max_iter):
                validate(job, parts, pos, ctx)
                if job.tracker is not None and job.tracker.after_validation(
                    pos.iteration, job.max_iter
                ):
                    break  # pruned by the study, or stopped early: every rank breaks here
            stopping = (
                any_rank(ctx, stop.signal is not None)
                if ctx.world_size > 1
                else stop.signal is not None
            )
            code = checkpoint_or_requeue(job, parts, pos, stopping, ctx, log)
            if code is not None:
                return code
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
    return None


def finish(job: Job, parts: Parts, pos: Position, ctx: Context, log: logging.Logger) -> None:
    """Rank summaries; rank 0 marks the run done and publishes a single point's bundle."""
    write_rank_summary(job.layout, job.point, ctx, parts.model, job.batches, pos.start)
    if not ctx.is_main:
        return
    progress = job.layout.progress(job.point)
    write_json_atomic(
        progress,
        {
            **(read_json(progress) or {}),
            "iteration": pos.iteration,
            "max_iterations": job.max_iter,
            "eta_s": 0,
            "state": job.tracker.outcome if job.tracker is not None else "done",
            **pos.last_validation,
        },
    )
    if job.single_point:
        publish_model(job.layout.root, job.point)
    best = "none" if pos.best is None else f"{pos.best:.3f}"
    log.info(
        "training done: %d iterations, best %s %s",
        pos.iteration,
        job.task.info.selection,
        best,
    )


def train(
    run: RunDir,
    point: int,
    spec: ExperimentSpec,
    ctx: Context,
    log: logging.Logger,
    max_iter_override: int | None,
    tracker: PointTracker | None = None,
) -> int:
    """Train one sweep point: 0 when done (or pruned), ``REQUEUE_EXIT`` when stopped by a signal."""
    job = prepare_job(run, point, spec, ctx, max_iter_override)
    job.tracker = tracker
    parts = build_parts(job, ctx)
    pos = resume(job, parts, ctx, log)
    if tracker is not None:
        tracker.start(pos.start)
    net = distribute(parts, ctx)
    code = run_loop(job, parts, net, pos, ctx, log)
    if code is not None:
        return code
    finish(job, parts, pos, ctx, log)
    if tracker is not None:
        tracker.finish()
    return 0


def rank_hardware(ctx: Context) -> dict[str, str]:
    """Where this rank ran (provenance): its host, device and GPU model."""
    gpu = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "none"
    where = ctx.placement.describe() if ctx.placement else str(ctx.device)
    return {"host": socket.gethostname(), "device": str(ctx.device), "gpu": gpu, "placement": where}


def write_rank_summary(
    layout: Layout, point: int, ctx: Context, model: nn.Module, batches: RankBatches, start: int
) -> None:
    """Per-rank facts for debugging a distributed run: which samples it read, its weights' digest
    (parameters only: BatchNorm running statistics are per rank between DDP's buffer broadcasts)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    first = (start // batches.steps_per_epoch) * batches.steps_per_epoch  # batches of one epoch
    write_json_atomic(
        layout.rank_summary(point, ctx.rank),
        {
            "rank": ctx.rank,
            "world_size": ctx.world_size,
            "environment": ctx.info.environment,
            **rank_hardware(ctx),
            "weights_sha256": digest.hexdigest(),
            "first_batches": [
                batches.batch_at(i) for i in range(first, first + min(3, batches.steps_per_epoch))
            ],
        },
    )


def train_one_step(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    parts: Parts,
    ctx: Context,
    spec: ExperimentSpec,
    iteration: int,
) -> float:
    """One optimisation step. Randomness is a function of (seed, iteration, rank): resumes are exact."""
    t = spec.train
    torch.manual_seed(t.seed * 1_000_003 + iteration * 131 + ctx.rank)
    generator = torch.Generator().manual_seed(t.seed * 7919 + iteration * 31 + ctx.rank)
    parts.optimizer.zero_grad(set_to_none=True)
    loss = parts.loss(net, images, labels, ctx, parts.amp_dtype, generator)
    parts.scaler.scale(loss).backward()
    if t.grad_clip:
        parts.scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    return float(loss.detach())


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``xvhpc train``'s flags. Its signal policy: stop signals are held from before this module
    (and torch) loads (cli.py's table, ``hold_signals``), so a run-limit signal during start-up
    checkpoints at the first iteration instead of killing the rank."""
    p.add_argument("--run-dir", required=True)
    p.add_argument("--point", type=int, default=0)
    p.add_argument(
        "--max-iterations",
        type=at_least(1),
        default=None,
        help="override the spec (tests, smoke runs)",
    )


def main(args: argparse.Namespace) -> int:
    """``xvhpc train``: rank 0 holds the point's run-dir lock; the job's other ranks never lock."""
    if lock.launch_rank() != 0:
        return _train_main(args)
    with lock.step(Path(args.run_dir).resolve(), [(f"train-{args.point}", False)]):
        return _train_main(args)


def _train_main(args: argparse.Namespace) -> int:
    run = RunDir.open(args.run_dir)
    spec = run.point(args.point)
    torch.set_num_threads(
        max(1, int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or torch.get_num_threads())
    )
    ctx = setup(spec.train.backend)
    log = setup_logging(ctx.rank)
    log.info(
        "rank %d/%d (%s) on %s, %s, backend %s, torch %s, autocast %s",
        ctx.rank,
        ctx.world_size,
        ctx.info.environment,
        socket.gethostname(),
        ctx.placement.describe() if ctx.placement else ctx.device,
        ctx.backend,
        torch.__version__,
        compat.amp_dtype(spec.train.amp, ctx.device.type) or "off",
    )
    tracker = None
    try:
        tracker = PointTracker.open(run, args.point, ctx, log)  # a study slot: its trial's spec
        if tracker.finished:
            log.info("slot %d: trial already finished; nothing to train", args.point)
            return 0
        code = train(run, args.point, tracker.spec, ctx, log, args.max_iterations, tracker)
        if code == REQUEUE_EXIT and os.environ.get(REQUEUE_MARKER_ENV) == "1":
            return 0  # the marker says it; a 75 could make the launcher kill ranks still saving
        return code
    except (MissingWeights, TrainError, UnloadableFile) as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        if tracker is not None:
            tracker.crashed()
        raise
    finally:
        teardown(ctx)
