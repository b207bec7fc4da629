"""Data-parallel scaling on this machine: samples/s of `xvhpc train` with 1 and 2 processes (gloo).

.venv/bin/python benchmarks/ddp.py [--iterations 40]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from common import compile_and_ingest, cpu_note, workdir

from xvhpc.data.synth import make_dataset


def images_per_s(run, procs: int, iterations: int, threads: int) -> float:
    shutil.rmtree(run / "train", ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={procs}",
        "-m",
        "xvhpc",
        "train",
        "--run-dir",
        str(run),
        "--max-iterations",
        str(iterations),
    ]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    lines = [
        json.loads(x) for x in (run / "train" / "0" / "metrics.jsonl").read_text().splitlines()
    ]
    rates = [x["images_per_s"] for x in lines if "images_per_s" in x][1:]  # skip warm-up window
    return sum(rates) / len(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--arch", default="resnet18")
    args = parser.parse_args()
    cores = os.cpu_count() or 2
    work = workdir("ddp")
    make_dataset(work / "data", per_class=40, size=128)
    spec = {
        "name": "ddp",
        "data": {"source": str(work / "data"), "image_size": args.size, "channels": 1},
        "model": {"arch": args.arch, "pretrained": "none"},
        "train": {
            "batch_size": args.batch,
            "workers": 0,
            "log_every": 5,
            "val_every": 100000,
            "checkpoint_every": 100000,
            "amp": False,
        },
    }
    run = compile_and_ingest(work, spec)
    print(
        f"DDP benchmark: {args.arch}, {args.size} px, batch {args.batch} per process, gloo; {cpu_note()}"
    )
    one = images_per_s(run, 1, args.iterations, threads=1)
    one_both = images_per_s(run, 1, args.iterations, threads=cores)
    two = images_per_s(run, 2, args.iterations, threads=1)
    print(f"  1 process, 1 thread      : {one:7.1f} samples/s")
    print(f"  1 process, {cores} threads     : {one_both:7.1f} samples/s")
    print(f"  2 processes, 1 thread each: {two:7.1f} samples/s")
    print(f"  DDP scaling per core (2 procs / 1 proc, 1 thread each): {two / one:.2f}x")
    print(f"  gain over one process using every core:                 {two / one_both:.2f}x")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
