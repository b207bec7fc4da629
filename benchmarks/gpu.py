"""GPU check (run on a machine with CUDA): xvhpc's training step against the torchvision reference loop.

    python benchmarks/gpu.py [--arch resnet50] [--iterations 120] [--batch 128] [--workers 8]

One run, same model, batch, image size, AMP (fp16 + GradScaler) and loader workers for every row:

- reference: the loop of torchvision's references/classification/train.py (ImageFolder over the
  same JPEG/PNG files, RandomResizedCrop + flip + normalise on the CPU, NCHW);
- xvhpc NCHW and xvhpc channels_last: `xvhpc train` on HDF5 shards of the same images;
- compute ceiling: the same step on one batch already on the GPU (no loader at all).

Prints images/s per row (after a warm-up), the ratio to the reference, xvhpc's data-wait fraction
and peak GPU memory. With 2+ GPUs add --gpus N to run xvhpc under torchrun with NCCL.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import compile_and_ingest, workdir
from torch import nn

from xvhpc.data.synth import CLASSES, make_dataset
from xvhpc.models.zoo import build_model
from xvhpc.spec.schema import ModelSpec

WARMUP = 10  # iterations left out of every rate (cuDNN autotuning, worker start-up)


def timed_steps(batches, step, iterations: int) -> float:
    """images/s over ``iterations`` steps after ``WARMUP``; ``batches`` yields (images, labels)."""
    seen, start = 0, 0.0
    for i, (x, y) in enumerate(batches):
        if i == WARMUP:
            torch.cuda.synchronize()
            start, seen = time.perf_counter(), 0
        step(x, y)
        seen += len(y)
        if i + 1 == WARMUP + iterations:
            break
    torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def amp_step(model: nn.Module, channels_last: bool):
    """One fp16 AMP SGD step on (uint8 or float) CPU/GPU batches, as the reference loop does it."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda")
    criterion = nn.CrossEntropyLoss()
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.cuda(non_blocking=True).contiguous(memory_format=fmt)
        y = y.cuda(non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = criterion(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def model_for(arch: str, classes: int, channels_last: bool) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch=arch, pretrained="none"), classes).cuda().train()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def reference(data: Path, args: argparse.Namespace) -> float:
    """torchvision's reference classification loop (ImageFolder, CPU transforms, AMP)."""
    from torchvision import datasets
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.RandomResizedCrop(args.size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
            v2.ToDtype(torch.float, scale=True),
            v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    dataset = datasets.ImageFolder(str(data), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=True,
        drop_last=True,
        persistent_workers=True,
    )
    step = amp_step(model_for(args.arch, len(dataset.classes), False), channels_last=False)
    return timed_steps(endless(loader), step, args.iterations)


def ceiling(classes: int, args: argparse.Namespace) -> float:
    """The same step with one batch resident on the GPU: what the model alone allows."""
    x = torch.randn(args.batch, 3, args.size, args.size, device="cuda")
    y = torch.randint(0, classes, (args.batch,), device="cuda")
    step = amp_step(model_for(args.arch, classes, True), channels_last=True)
    return timed_steps(itertools.repeat((x, y)), step, args.iterations)


def endless(loader):
    while True:
        yield from loader


def xvhpc_train(work: Path, data: Path, args: argparse.Namespace, channels_last: bool) -> dict:
    """`xvhpc train` on shards; images/s and data-wait from its own metrics log."""
    spec = {
        "name": "gpu",
        "data": {"source": str(data), "image_size": args.size, "channels": 1, "shards": 4},
        "model": {"arch": args.arch, "pretrained": "none"},
        "train": {
            "max_iterations": WARMUP + args.iterations,
            "batch_size": args.batch,
            "learning_rate": 0.01,
            "workers": args.workers,
            "amp": True,
            "channels_last": channels_last,
            "log_every": 10,
            "val_every": 100000,
            "checkpoint_every": 100000,
        },
    }
    folder = work / ("channels_last" if channels_last else "nchw")
    folder.mkdir()
    run = compile_and_ingest(folder, spec)
    code = (
        "import sys, torch; from xvhpc.cli import main; rc = main(sys.argv[1:]); "
        "torch.cuda.is_available() and print('PEAK_MEM_GB', torch.cuda.max_memory_allocated() / 2**30); "
        "sys.exit(rc)"
    )
    cmd = [sys.executable, "-c", code, "train", "--run-dir", str(run)]
    if args.gpus > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc-per-node={args.gpus}", "-m", "xvhpc", "train", "--run-dir", str(run)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ})
    log = (run / "train" / "0" / "metrics.jsonl").read_text().splitlines()
    rates = [r for r in map(json.loads, log) if "images_per_s" in r and r["iteration"] > WARMUP]
    peak = [float(x.split()[1]) for x in out.stdout.splitlines() if x.startswith("PEAK_MEM_GB")]
    return {
        "images_per_s": sum(r["images_per_s"] for r in rates) / len(rates),
        "data_wait": sum(r["data_wait_fraction"] for r in rates) / len(rates),
        "peak_gb": peak[0] if peak else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--iterations", type=int, default=120)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--gpus", type=int, default=1)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu.py: no CUDA device here; run it on a GPU node")
    torch.backends.cudnn.benchmark = True  # the reference loop's default on fixed-size input
    work = workdir("gpu")
    data = make_dataset(work / "data", per_class=args.per_class, size=256)
    rows = {"reference (torchvision loop, ImageFolder)": reference(data, args)}
    for channels_last in (False, True):
        got = xvhpc_train(work, data, args, channels_last)
        name = f"xvhpc train, {'channels_last' if channels_last else 'NCHW'}"
        rows[name] = got["images_per_s"]
        print(f"  {name}: data-wait {got['data_wait']:.1%}, peak {got['peak_gb']:.2f} GiB")
    rows["compute ceiling (batch resident on GPU)"] = ceiling(len(CLASSES), args)
    base = next(iter(rows.values()))
    print(
        f"device: {torch.cuda.get_device_name(0)} x{args.gpus}, torch {torch.__version__}, "
        f"{args.arch}, batch {args.batch}, {args.size} px, AMP fp16, {args.workers} workers"
    )
    for name, rate in rows.items():
        print(f"  {name:45s} {rate:8.1f} images/s  {rate / base:5.2f}x reference")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
