"""Training input speed: torchvision ImageFolder over the original JPEGs vs the xvhpc shard loader.

    .venv/bin/python benchmarks/loader.py [--images 120] [--size 2000] [--workers 2] [--block 8]

Both feed normalised 224 px float tensors (ImageFolder: in its workers; xvhpc: uint8 from
the workers, ``to_model_input`` where the model runs) to a DataLoader with the same workers
and batch size. The shards are read in random order (one read per sample) and block-shuffled
(``RankBatches(block=...)``: runs of consecutive rows, one read per run). Then where the time
goes per sample, in one process: raw HDF5 read, the batch read, collation, the conversion
to model input; and the data-wait fraction of real CPU training steps (xvhpc train).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Iterator

import h5py
import torch
import yaml
from common import cpu_note, make_highres, workdir
from torch.utils.data import DataLoader, default_collate
from torchvision import datasets, transforms

from xvhpc.cli import main as xvhpc
from xvhpc.data.dataset import Index, RankBatches, ShardDataset, load_index, to_model_input


class Epoch:
    """One epoch of ``RankBatches`` (which runs forever) as a finite batch sampler."""

    def __init__(self, batches: RankBatches):
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return (self.batches.batch_at(i) for i in range(self.batches.steps_per_epoch))

    def __len__(self) -> int:
        return self.batches.steps_per_epoch


def shard_loader(index: Index, batch: int, workers: int, block: int) -> DataLoader:
    batches = RankBatches(len(index), batch, 0, 1, seed=0, block=block)
    return DataLoader(
        ShardDataset(index),
        batch_sampler=Epoch(batches),
        num_workers=workers,
        persistent_workers=True,
        prefetch_factor=4,
    )


def per_sample_us(fn, n: int, repeat: int = 3) -> float:
    """CPU microseconds per sample of ``fn()`` (which handles ``n`` samples), best of
    ``repeat``: CPU time, so other work on a shared machine moves it little."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best / n * 1e6


def where_time_goes(index: Index, folder: datasets.ImageFolder, batch: int, block: int) -> None:
    """One process, no workers, one thread: the CPU cost per sample of each part of a batch,
    and of an ImageFolder sample (decode + resize + normalise) for comparison."""
    torch.set_num_threads(1)
    data = ShardDataset(index)
    steps = RankBatches(len(index), batch, 0, 1, seed=0, block=block)
    rand = RankBatches(len(index), batch, 0, 1, seed=0)
    n = steps.steps_per_epoch * batch

    def raw() -> None:
        for path in index.files:
            with h5py.File(path, "r") as h5:
                h5["images"][:]

    def read(b: RankBatches) -> None:
        for i in range(b.steps_per_epoch):
            data.__getitems__(b.batch_at(i))

    def image_folder() -> None:
        default_collate([folder[i] for i in range(min(len(folder), batch))])

    items = data.__getitems__(steps.batch_at(0))
    images = default_collate(items)[0]
    total_rows = sum(h5py.File(p, "r")["images"].shape[0] for p in index.files)
    costs = {
        "raw HDF5 read of whole shards (floor)": per_sample_us(raw, total_rows),
        "batch read, random order (1 read per sample)": per_sample_us(lambda: read(rand), n),
        f"batch read, block-shuffled (1 read per {block} rows)": per_sample_us(
            lambda: read(steps), n
        ),
        "collate (stack into one batch tensor)": per_sample_us(
            lambda: default_collate(items), batch
        ),
        "to_model_input (uint8 NHWC → float NCHW)": per_sample_us(
            lambda: to_model_input(images), batch
        ),
        "order: RankBatches.batch_at": per_sample_us(lambda: steps.batch_at(0), batch),
    }
    print("  where the time goes, CPU µs per sample, one process, one thread:")
    for name, cost in costs.items():
        print(f"    {name:52s} {cost:8.1f}")
    ours = sum(costs[k] for k in list(costs)[2:])
    theirs = per_sample_us(image_folder, min(len(folder), batch), repeat=1)
    print(f"    xvhpc total (block read + collate + input + order)   {ours:8.1f}")
    print(f"    ImageFolder: decode + resize + normalise + collate   {theirs:8.1f}")
    print(f"  => CPU per sample: {theirs / ours:.1f}x less than ImageFolder (load-independent)")


def rate(loader: DataLoader, epochs: int, to_input=None) -> float:
    """Samples/s over ``epochs`` after one warm-up epoch (persistent workers already started)."""
    for _ in loader:
        pass
    start, n = time.perf_counter(), 0
    for _ in range(epochs):
        for images, _labels in loader:
            if to_input is not None:
                images = to_input(images)
            n += len(images)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--block", type=int, default=8, help="rows per shuffled block")
    parser.add_argument("--epochs", type=int, default=30, help="of the shards (small: fast)")
    parser.add_argument("--no-train", action="store_true", help="skip the data-wait training run")
    args = parser.parse_args()
    work = workdir("loader")
    source = make_highres(work / "data", args.images, 0, args.size)
    print(
        f"loader benchmark: {args.images} JPEGs at {args.size} px → 224 px, batch {args.batch}, {args.workers} workers; {cpu_note()}"
    )
    tf = transforms.Compose(
        [
            transforms.Resize(224),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    folder = DataLoader(
        datasets.ImageFolder(str(source), tf),
        batch_size=args.batch,
        num_workers=args.workers,
        persistent_workers=True,
    )
    baseline = rate(folder, 1)
    spec = {
        "name": "bench",
        "data": {
            "source": str(source),
            "image_size": 224,
            "channels": 1,
            "shards": 2,
            "split": {"validation": 0.1},
        },
        "model": {"arch": "resnet18", "pretrained": "none"},
        "train": {
            "max_iterations": 30,  # data-wait fraction below
            "batch_size": 16,
            "workers": args.workers,
            "log_every": 5,
            "val_every": 1000,
            "amp": False,
        },
    }
    (work / "spec.yaml").write_text(yaml.safe_dump(spec))
    run = work / "run"
    assert xvhpc(["compile", str(work / "spec.yaml"), "--out", str(run)]) == 0
    assert xvhpc(["ingest", "--run-dir", str(run), "--shard", "all", "--merge"]) == 0
    index = load_index(run, "train")
    random = rate(shard_loader(index, args.batch, args.workers, 1), args.epochs, to_model_input)
    ours = rate(
        shard_loader(index, args.batch, args.workers, args.block), args.epochs, to_model_input
    )
    print(f"  torchvision ImageFolder (decode + resize per epoch)   {baseline:8.1f} samples/s")
    print(
        f"  xvhpc shards, random order                            {random:8.1f} samples/s  {random / baseline:5.1f}x"
    )
    print(
        f"  xvhpc shards, block-shuffled ({args.block} rows)               {ours:8.1f} samples/s  {ours / baseline:5.1f}x"
    )
    print(f"  ratio: {ours / baseline:.1f}x (target ≥ 50x)")
    where_time_goes(index, datasets.ImageFolder(str(source), tf), args.batch, args.block)
    if args.no_train:
        shutil.rmtree(work)
        return
    torch.set_num_threads(2)
    assert xvhpc(["train", "--run-dir", str(run)]) == 0
    lines = [
        json.loads(x) for x in (run / "train" / "0" / "metrics.jsonl").read_text().splitlines()
    ]
    waits = [x["data_wait_fraction"] for x in lines if "data_wait_fraction" in x][
        1:
    ]  # first window includes worker start
    print(
        f"  data-wait fraction of CPU training steps (resnet18, 224 px, batch 16): {sum(waits) / len(waits):.1%}"
    )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
