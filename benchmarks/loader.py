"""Training input speed: torchvision ImageFolder over the original JPEGs vs the xvhpc shard loader.

    .venv/bin/python benchmarks/loader.py [--images 120] [--size 2000] [--workers 2]

Both feed 224 px tensors to a DataLoader with the same workers and batch size. Then the
data-wait fraction of real CPU training steps (xvhpc train, from its metrics.jsonl).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import torch
import yaml
from common import cpu_note, make_highres, workdir
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from xvhpc.cli import main as xvhpc
from xvhpc.data.dataset import ShardDataset, load_index, to_model_input


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
            "max_iterations": 30,
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
    shards = DataLoader(
        ShardDataset(load_index(run, "train")),
        batch_size=args.batch,
        num_workers=args.workers,
        shuffle=True,
        persistent_workers=True,
    )
    ours = rate(shards, 5, to_model_input)
    print(f"  torchvision ImageFolder (decode + resize per epoch)   {baseline:8.1f} samples/s")
    print(f"  xvhpc shards (uint8 HDF5 → normalised tensors)        {ours:8.1f} samples/s")
    print(f"  ratio: {ours / baseline:.1f}x")
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
