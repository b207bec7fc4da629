"""``xvhpc train``: data-parallel transfer learning of one sweep point from HDF5 shards.

Shaped like torchvision's references/classification/train.py: ``main`` → ``train`` →
``train_one_step`` / ``evaluate``; rank 0 logs and saves; no global state is mutated.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Index,
    RankBatches,
    ShardDataset,
    load_index,
    online_augment,
    to_model_input,
)
from ..models.weights import MissingWeights
from ..models.zoo import build_model
from ..rundir import REQUEUE_EXIT
from ..runtime.distributed import Context, all_reduce_sum, any_rank, setup, teardown
from ..spec import ExperimentSpec
from ..util import atomic_path, read_json, replace_dir, write_json_atomic, write_text_atomic
from .common import RunDir, setup_logging, want_bar

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


@dataclass
class StopFlag:
    """Set by walltime/preemption signals; checked once per iteration on every rank."""

    signal: int | None = None
    previous: dict = field(default_factory=dict)

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)

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


def class_weights(index: Index, classes: int) -> torch.Tensor:
    counts = np.bincount(index.labels, minlength=classes).astype(np.float64)
    weights = counts.sum() / np.maximum(counts, 1) / classes
    return torch.tensor(weights, dtype=torch.float32)


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: ShardDataset, ctx: Context, criterion: nn.Module, batch_size: int
) -> dict[str, float]:
    """Validation loss and accuracy; ranks take disjoint slices and sum their counts."""
    model.eval()
    total_loss = correct = seen = 0.0
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))
    for start in range(0, len(indices), batch_size):
        batch = [dataset[i] for i in indices[start : start + batch_size]]
        images = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch], device=ctx.device)
        logits = model(to_model_input(images, ctx.device))
        total_loss += float(criterion(logits, labels)) * len(batch)
        correct += float((logits.argmax(1) == labels).sum())
        seen += len(batch)
    model.train()
    total_loss, correct, seen = all_reduce_sum(ctx, [total_loss, correct, seen])
    return {
        "val_loss": total_loss / max(seen, 1),
        "val_accuracy": correct / max(seen, 1),
        "val_samples": int(seen),
    }


def save_bundle(
    out: Path,
    model: nn.Module,
    spec: ExperimentSpec,
    classes: list[str],
    manifest: dict,
    iteration: int,
    metrics: dict,
) -> None:
    """The model bundle evaluate/serve/export read: weights + meta, replaced atomically."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model.state_dict(), tmp / "weights.pt")
    meta = {
        "arch": spec.model.arch,
        "import": spec.model.import_,
        "classes": classes,
        "image_size": manifest["image_size"],
        "channels": manifest["channels"],
        "resize": manifest["resize"],
        "tile_grid": spec.data.tile_grid,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "iteration": iteration,
        "validation": metrics,
        "threshold": spec.deploy.threshold,
        "spec": spec.model_dump(mode="json", by_alias=True),
    }
    write_json_atomic(tmp / "meta.json", meta)
    replace_dir(tmp, out)


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def append_metrics(path: Path, record: dict) -> None:
    with path.open("a") as fh:
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


def train(
    run: RunDir, point: int, spec: ExperimentSpec, ctx: Context, log, max_iter_override: int | None
) -> int:
    out = run.root / "train" / str(point)
    manifest = read_json(run.root / "manifest.json")
    if manifest is None or "error" in manifest:
        print(
            f"xvhpc: error: {run.root}/manifest.json missing or failed; run ingest first",
            file=sys.stderr,
        )
        return 2
    classes = manifest["classes"]
    t = spec.train
    train_index, val_index = load_index(run.root, "train"), load_index(run.root, "val")
    train_set = ShardDataset(train_index, cache_in_memory=t.cache_in_memory)
    val_set = ShardDataset(val_index)
    batches = RankBatches(
        len(train_index),
        t.batch_size,
        ctx.rank,
        ctx.world_size,
        t.seed,
        weights=(1.0 / np.bincount(train_index.labels)[train_index.labels])
        if t.balanced_sampling
        else None,
    )
    max_iter = max_iter_override or t.max_iterations or (t.epochs or 1) * batches.steps_per_epoch

    torch.manual_seed(t.seed)  # identical initial weights on every rank
    model = build_model(spec.model, len(classes)).to(ctx.device)
    optimizer = make_optimizer(model, spec, ctx.world_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(spec, max_iter))
    use_amp = t.amp and ctx.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    weight = (
        class_weights(train_index, len(classes)).to(ctx.device)
        if t.class_weights == "auto"
        else None
    )
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=t.label_smoothing)
    val_criterion = nn.CrossEntropyLoss()

    ckpt_path = out / "checkpoint.pt"
    metrics_path = out / "metrics.jsonl"
    start, best, resumed_from = 0, -1.0, None
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=ctx.device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start, best, resumed_from = state["iteration"], state["best"], state["iteration"]
        torch.set_rng_state(state["rng"])
        log.info("resumed from checkpoint at iteration %d", start)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        trim_metrics(metrics_path, start)
        if resumed_from is not None:
            append_metrics(metrics_path, {"iteration": start, "event": "resumed"})
    if ctx.backend == "horovod":
        import horovod.torch as hvd

        optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        net = model
    elif ctx.world_size > 1:
        net = DistributedDataParallel(
            model,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            gradient_as_bucket_view=True,
        )
    else:
        net = model

    batches.start = start
    start_method = os.environ.get("XVHPC_MP_START_METHOD")
    loader = DataLoader(
        train_set,
        batch_sampler=batches,
        num_workers=t.workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if t.workers else None,
        multiprocessing_context=start_method if t.workers and start_method else None,
    )
    stop = StopFlag()
    stop.install()
    bar = None
    if ctx.is_main and want_bar():
        from tqdm import tqdm

        bar = tqdm(total=max_iter, initial=start, desc=f"train point {point}", unit="it")
    window_loss = window_n = 0.0
    window_wait = window_time = 0.0
    window_images = 0
    t_start = time.monotonic()
    iteration = start
    metrics: dict = {}
    try:
        data_iter = iter(loader)
        net.train()
        while iteration < max_iter:
            tick = time.monotonic()
            images, labels = next(data_iter)
            waited = time.monotonic() - tick
            loss = train_one_step(
                net, images, labels, optimizer, scaler, criterion, ctx, spec, iteration, use_amp
            )
            scheduler.step()
            iteration += 1
            window_loss += loss
            window_n += 1
            window_images += len(labels)
            window_wait += waited
            window_time += time.monotonic() - tick
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
            if iteration % t.log_every == 0 or iteration == max_iter:
                total_loss, n, imgs = all_reduce_sum(ctx, [window_loss, window_n, window_images])
                rate = imgs / max(window_time, 1e-9) if window_time else 0.0
                record = {
                    "iteration": iteration,
                    "loss": total_loss / max(n, 1),
                    "lr": optimizer.param_groups[0]["lr"],
                    "images_per_s": rate,
                    "data_wait_fraction": window_wait / max(window_time, 1e-9),
                }
                if ctx.is_main:
                    append_metrics(metrics_path, record)
                    elapsed = time.monotonic() - t_start
                    eta = elapsed / max(iteration - start, 1) * (max_iter - iteration)
                    write_json_atomic(
                        out / "progress.json",
                        {
                            **record,
                            "max_iterations": max_iter,
                            "eta_s": round(eta, 1),
                            "state": "running",
                            "resumed_from": resumed_from,
                            "world_size": ctx.world_size,
                        },
                    )
                window_loss = window_n = window_wait = window_time = 0.0
                window_images = 0
            if iteration % t.val_every == 0 or iteration == max_iter:
                metrics = evaluate(model, val_set, ctx, val_criterion, t.batch_size)
                if ctx.is_main:
                    append_metrics(metrics_path, {"iteration": iteration, **metrics})
                    if metrics["val_accuracy"] > best or not (out / "model").exists():
                        best = max(best, metrics["val_accuracy"])
                        save_bundle(
                            out / "model", model, spec, classes, manifest, iteration, metrics
                        )
            stopping = (
                any_rank(ctx, stop.signal is not None)
                if ctx.world_size > 1
                else stop.signal is not None
            )
            if iteration % t.checkpoint_every == 0 or iteration == max_iter or stopping:
                if ctx.is_main:
                    save_checkpoint(
                        ckpt_path,
                        {
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "scaler": scaler.state_dict(),
                            "iteration": iteration,
                            "best": best,
                            "rng": torch.get_rng_state(),
                        },
                    )
            if stopping and iteration < max_iter:
                log.warning(
                    "signal received: checkpoint written at iteration %d; exiting %d for requeue",
                    iteration,
                    REQUEUE_EXIT,
                )
                if ctx.is_main:
                    write_json_atomic(
                        out / "progress.json",
                        {
                            **(read_json(out / "progress.json") or {}),
                            "state": "checkpointed",
                            "iteration": iteration,
                        },
                    )
                return REQUEUE_EXIT
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
    write_rank_summary(out, ctx, model, batches, start)
    if ctx.is_main:
        progress = read_json(out / "progress.json") or {}
        write_json_atomic(
            out / "progress.json",
            {
                **progress,
                "iteration": iteration,
                "max_iterations": max_iter,
                "eta_s": 0,
                "state": "done",
                **metrics,
            },
        )
        if len(run.plan["points"]) == 1:
            publish_model(run, point)
        log.info("training done: %d iterations, best validation accuracy %.3f", iteration, best)
    return 0


def write_rank_summary(
    out: Path, ctx: Context, model: nn.Module, batches: RankBatches, start: int
) -> None:
    """Per-rank facts for debugging a distributed run: which samples it read, its weights' digest
    (parameters only: BatchNorm running statistics are per rank between DDP's buffer broadcasts)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    first = (start // batches.steps_per_epoch) * batches.steps_per_epoch  # batches of one epoch
    write_json_atomic(
        out / "ranks" / f"rank-{ctx.rank}.json",
        {
            "rank": ctx.rank,
            "world_size": ctx.world_size,
            "environment": ctx.info.environment,
            "weights_sha256": digest.hexdigest(),
            "first_batches": [
                batches.batch_at(i) for i in range(first, first + min(3, batches.steps_per_epoch))
            ],
        },
    )


def publish_model(run: RunDir, point: int) -> None:
    """Copy a point's bundle to RUN_DIR/model (what serve and export read)."""
    src = run.root / "train" / str(point) / "model"
    tmp = run.root / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    replace_dir(tmp, run.root / "model")


def train_one_step(
    net,
    images,
    labels,
    optimizer,
    scaler,
    criterion,
    ctx: Context,
    spec: ExperimentSpec,
    iteration: int,
    use_amp: bool,
) -> float:
    """One optimisation step. Randomness is a function of (seed, iteration, rank): resumes are exact."""
    t = spec.train
    torch.manual_seed(t.seed * 1_000_003 + iteration * 131 + ctx.rank)
    generator = torch.Generator().manual_seed(t.seed * 7919 + iteration * 31 + ctx.rank)
    x = online_augment(to_model_input(images, ctx.device), generator)
    y = labels.to(ctx.device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=ctx.device.type, dtype=torch.float16, enabled=use_amp):
        logits = net(x)
        loss = criterion(logits, y)
    scaler.scale(loss).backward()
    if t.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def main(args: argparse.Namespace) -> int:
    run = RunDir.open(args.run_dir)
    spec = run.point(args.point)
    torch.set_num_threads(
        max(1, int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or torch.get_num_threads())
    )
    ctx = setup(spec.train.backend)
    log = setup_logging(ctx.rank)
    log.info(
        "rank %d/%d (%s) on %s, backend %s",
        ctx.rank,
        ctx.world_size,
        ctx.info.environment,
        ctx.device,
        ctx.backend,
    )
    try:
        return train(run, args.point, spec, ctx, log, args.max_iterations)
    except MissingWeights as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
    finally:
        teardown(ctx)
