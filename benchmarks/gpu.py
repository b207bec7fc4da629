"""GPU check (run on a machine with CUDA): a short AMP (fp16 + GradScaler) GoogLeNet training.

    .venv/bin/python benchmarks/gpu.py [--iterations 60] [--batch 64] [--size 224]

Prints images/s, the data-wait fraction and peak GPU memory; uses `xvhpc train` on shards
made from synthetic X-rays, so the whole compute-node path (loader, AMP, NCCL-ready DDP code)
is what runs. With 2+ GPUs add --gpus N to run under torchrun with NCCL.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import torch
from common import compile_and_ingest, workdir

from xvhpc.data.synth import make_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--gpus", type=int, default=1)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu.py: no CUDA device here; run it on a GPU node")
    work = workdir("gpu")
    make_dataset(work / "data", per_class=64, size=256)
    spec = {
        "name": "gpu",
        "data": {"source": str(work / "data"), "image_size": args.size, "channels": 1, "shards": 2},
        "model": {"arch": "googlenet", "pretrained": "none"},
        "train": {
            "max_iterations": args.iterations,
            "batch_size": args.batch,
            "workers": 4,
            "amp": True,
            "log_every": 10,
            "val_every": 100000,
            "checkpoint_every": 100000,
        },
    }
    run = compile_and_ingest(work, spec, quiet=False)
    code = (
        "import sys, torch, json; from xvhpc.cli import main; rc = main(sys.argv[1:]); "
        "print('PEAK_MEM_GB', torch.cuda.max_memory_allocated() / 2**30); sys.exit(rc)"
    )
    cmd = [sys.executable, "-c", code, "train", "--run-dir", str(run)]
    if args.gpus > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={args.gpus}",
            "-m",
            "xvhpc",
            "train",
            "--run-dir",
            str(run),
        ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ})
    lines = [
        json.loads(x) for x in (run / "train" / "0" / "metrics.jsonl").read_text().splitlines()
    ]
    rates = [x for x in lines if "images_per_s" in x][1:]
    print(
        f"device: {torch.cuda.get_device_name(0)} x{args.gpus}, torch {torch.__version__}, AMP fp16"
    )
    print(f"  images/s: {sum(x['images_per_s'] for x in rates) / len(rates):.1f}")
    print(f"  data-wait fraction: {sum(x['data_wait_fraction'] for x in rates) / len(rates):.1%}")
    for line in out.stdout.splitlines():
        if line.startswith("PEAK_MEM_GB"):
            print(f"  peak GPU memory: {float(line.split()[1]):.2f} GiB")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
