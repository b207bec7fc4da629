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

import yaml
from common import cpu_note, workdir

from xvhpc.data.synth import make_dataset


def images_per_s(run, procs: int, iterations: int) -> float:
    shutil.rmtree(run / "train", ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // procs))}
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
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    work = workdir("ddp")
    make_dataset(work / "data", per_class=40, size=128)
    spec = {
        "name": "ddp",
        "data": {"source": str(work / "data"), "image_size": 64, "channels": 1},
        "model": {"arch": "resnet18", "pretrained": "none"},
        "train": {
            "batch_size": 16,
            "workers": 0,
            "log_every": 5,
            "val_every": 100000,
            "checkpoint_every": 100000,
            "amp": False,
        },
    }
    (work / "spec.yaml").write_text(yaml.safe_dump(spec))
    run = work / "run"
    subprocess.run(
        [sys.executable, "-m", "xvhpc", "compile", str(work / "spec.yaml"), "--out", str(run)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "xvhpc",
            "ingest",
            "--run-dir",
            str(run),
            "--shard",
            "all",
            "--merge",
        ],
        check=True,
        capture_output=True,
    )
    print(f"DDP benchmark: resnet18, 64 px, batch 16 per process, gloo; {cpu_note()}")
    one = images_per_s(run, 1, args.iterations)
    two = images_per_s(run, 2, args.iterations)
    print(f"  1 process : {one:7.1f} samples/s")
    print(f"  2 processes: {two:7.1f} samples/s")
    print(f"  scaling: {two / one:.2f}x")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
