"""Training input speed: torchvision ImageFolder over the original JPEGs vs the xvhpc shard loader.

    .venv/bin/python benchmarks/loader.py [--images 120] [--size 2000] [--workers 2] [--block 8]
                                          [--epochs 100] [--device cuda] [--no-train]

Both sides are DataLoaders with the same workers and batch size, fed one stream of batches in
random order (``RankBatches``, as training feeds its loader: no restart per epoch), timed in
wall clock after the first ``workers × prefetch`` batches. ImageFolder decodes, resizes and
normalises in its workers and hands over float batches; xvhpc hands over the uint8 batches
that go to the device (read with one ``pread`` per sample, or per run of rows when
block-shuffled), and ``to_model_input`` turns them into normalised float where the model runs:
on the GPU with ``--device cuda`` (both sides then copy from pinned memory and are timed to
the device), on CPU in the main process otherwise (printed as its own line: on a CPU-only
machine it costs more than reading). Then where the time goes per sample, and the data-wait
fraction of real CPU training steps (xvhpc train).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable, Iterator

import h5py
import torch
import yaml
from common import cpu_note, make_highres, workdir
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import datasets, transforms

from xvhpc.cli import main as xvhpc
from xvhpc.data.dataset import Index, RankBatches, ShardDataset, load_index, to_model_input


class Stream:
    """``count`` batches of ``RankBatches`` (which runs forever) as a finite batch sampler."""

    def __init__(self, batches: RankBatches, count: int):
        self.batches, self.count = batches, count

    def __iter__(self) -> Iterator[list[int]]:
        return (self.batches.batch_at(i) for i in range(self.count))

    def __len__(self) -> int:
        return self.count


def loader(data: Dataset, n: int, batch: int, count: int, workers: int, block: int, pin: bool):
    """A DataLoader over ``count`` random-order (or block-shuffled) batches of ``data``."""
    return DataLoader(
        data,
        batch_sampler=Stream(RankBatches(n, batch, 0, 1, seed=0, block=block), count),
        num_workers=workers,
        prefetch_factor=4,
        pin_memory=pin,
    )


def rate(batches: DataLoader, skip: int, to_input: Callable) -> tuple[float, float]:
    """Samples/s in wall clock after the first ``skip`` batches (workers starting, queues
    filling), and the main process's CPU µs per sample over the same span."""
    n, it = 0, iter(batches)
    for _ in range(skip):
        to_input(next(it)[0])
    sync()
    start, cpu = time.perf_counter(), time.process_time()
    for images, _labels in it:
        n += len(to_input(images))
    sync()
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def per_sample_us(fn: Callable[[], object], n: int, repeat: int = 3) -> float:
    """CPU microseconds per sample of ``fn()`` (which handles ``n`` samples), best of
    ``repeat``: CPU time, so other work on a shared machine moves it little."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best / n * 1e6


def where_time_goes(
    index: Index, folder: datasets.ImageFolder, batch: int, block: int, receive_us: float
) -> None:
    """One process, no workers, one thread: the CPU cost per sample of each part of a batch,
    and of an ImageFolder sample (decode + resize + normalise) for comparison."""
    torch.set_num_threads(1)
    rand = RankBatches(len(index), batch, 0, 1, seed=0)
    blocks = RankBatches(len(index), batch, 0, 1, seed=0, block=block)
    n = rand.steps_per_epoch * batch

    def raw() -> None:
        for path in index.files:
            with h5py.File(path, "r") as h5:
                h5["images"][:]

    def read(data: ShardDataset, b: RankBatches) -> None:
        for i in range(b.steps_per_epoch):
            data.__getitems__(b.batch_at(i))

    def image_folder() -> None:
        default_collate([folder[i] for i in range(min(len(folder), batch))])

    data = ShardDataset(index)
    items = data.__getitems__(rand.batch_at(0))
    images = default_collate(items)[0]
    total_rows = sum(h5py.File(p, "r")["images"].shape[0] for p in index.files)
    costs = {
        "raw HDF5 read of whole shards (floor)": per_sample_us(raw, total_rows),
        "random order, through h5py (compressed shards)": per_sample_us(
            lambda: read(ShardDataset(index, direct=False), rand), n
        ),
        f"block-shuffled ({block} rows), through h5py": per_sample_us(
            lambda: read(ShardDataset(index, direct=False), blocks), n
        ),
        f"block-shuffled ({block} rows), pread per run": per_sample_us(
            lambda: read(data, blocks), n
        ),
        "random order, pread per sample (training's order)": per_sample_us(
            lambda: read(data, rand), n
        ),
        "order: RankBatches.batch_at": per_sample_us(lambda: rand.batch_at(0), batch),
        "collate in the worker (stack into one batch)": per_sample_us(
            lambda: default_collate(items), batch
        ),
        "main process: receive a uint8 batch (CPU, measured)": receive_us,
        "to_model_input on CPU (on a GPU it runs there)": per_sample_us(
            lambda: to_model_input(images), batch
        ),
    }
    print("  where the time goes, CPU µs per sample, one process, one thread:")
    for name, cost in costs.items():
        print(f"    {name:54s} {cost:8.1f}")
    ours = sum(list(costs.values())[4:8])
    theirs = per_sample_us(image_folder, min(len(folder), batch), repeat=1)
    print(f"    {'xvhpc to the device (random read + order + collate + receive)':54s} {ours:8.1f}")
    print(f"    {'ImageFolder: decode + resize + normalise + collate':54s} {theirs:8.1f}")
    print(f"  => CPU per sample: {theirs / ours:.0f}x less than ImageFolder (load-independent)")


def spec_for(source: str, workers: int) -> dict:
    return {
        "name": "bench",
        "data": {
            "source": source,
            "image_size": 224,
            "channels": 1,
            "shards": 2,
            "split": {"validation": 0.1},
        },
        "model": {"arch": "resnet18", "pretrained": "none"},
        "train": {
            "max_iterations": 30,  # data-wait fraction below
            "batch_size": 16,
            "workers": workers,
            "log_every": 5,
            "val_every": 1000,
            "amp": False,
        },
    }


def data_wait(run) -> None:
    """The data-wait fraction of real CPU training steps (xvhpc train)."""
    torch.set_num_threads(2)
    assert xvhpc(["train", "--run-dir", str(run)]) == 0
    lines = [
        json.loads(x) for x in (run / "train" / "0" / "metrics.jsonl").read_text().splitlines()
    ]
    # the first window includes worker start
    waits = [x["data_wait_fraction"] for x in lines if "data_wait_fraction" in x][1:]
    print(
        "  data-wait fraction of CPU training steps (resnet18, 224 px, batch 16): "
        f"{sum(waits) / len(waits):.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--block", type=int, default=8, help="rows per shuffled block")
    parser.add_argument("--epochs", type=int, default=100, help="of the shards, timed")
    parser.add_argument("--folder-epochs", type=int, default=2, help="of ImageFolder, timed")
    parser.add_argument("--device", default="cpu", help="where to_model_input runs: cpu, cuda")
    parser.add_argument("--no-train", action="store_true", help="skip the data-wait training run")
    args = parser.parse_args()
    device = torch.device(args.device)
    pin = device.type == "cuda"
    work = workdir("loader")
    source = make_highres(work / "data", args.images, 0, args.size)
    print(
        f"loader benchmark: {args.images} JPEGs at {args.size} px → 224 px, batch {args.batch}, "
        f"{args.workers} workers, model input on {device}; {cpu_note()}"
    )
    tf = transforms.Compose(
        [
            transforms.Resize(224),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    folder = datasets.ImageFolder(str(source), tf)
    skip = args.workers * 4  # batches before the clock starts: workers start, queues fill
    count = skip + max(1, args.folder_epochs * len(folder) // args.batch)
    baseline, _ = rate(
        loader(folder, len(folder), args.batch, count, args.workers, 1, pin),
        skip,
        lambda x: x.to(device, non_blocking=True),
    )
    (work / "spec.yaml").write_text(yaml.safe_dump(spec_for(str(source), args.workers)))
    run = work / "run"
    assert xvhpc(["compile", str(work / "spec.yaml"), "--out", str(run)]) == 0
    assert xvhpc(["ingest", "--run-dir", str(run), "--shard", "all", "--merge"]) == 0
    index = load_index(run, "train")
    count = skip + args.epochs * max(1, len(index) // args.batch)

    def ours(block: int, to_input: Callable) -> tuple[float, float]:
        data = ShardDataset(index)
        return rate(
            loader(data, len(index), args.batch, count, args.workers, block, pin), skip, to_input
        )

    to_device = lambda x: x.to(device, non_blocking=True)  # noqa: E731
    random, receive_us = ours(1, to_device)
    blocks, _ = ours(args.block, to_device)
    converted, _ = ours(1, lambda x: to_model_input(x, device))
    print(f"  {'torchvision ImageFolder (float batches)':58s} {baseline:8.1f} samples/s")
    rows = {
        "xvhpc uint8 batches, random order (training's order)": random,
        f"xvhpc uint8 batches, block-shuffled ({args.block} rows)": blocks,
        f"xvhpc random order + to_model_input on {device}": converted,
    }
    for name, value in rows.items():
        print(f"  {name:58s} {value:8.1f} samples/s  {value / baseline:6.1f}x")
    print(
        f"  ratio (random order, to the device): {random / baseline:.1f}x (target ≥ 50x); "
        f"with the float conversion on {device}: {converted / baseline:.1f}x"
    )
    where_time_goes(index, folder, args.batch, args.block, receive_us)
    if not args.no_train:
        data_wait(run)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
