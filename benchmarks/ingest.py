"""Ingest speed: a naive PIL loop vs `xvhpc ingest`, on the same high-res JPEG and PNG files.

    .venv/bin/python benchmarks/ingest.py [--jpeg 300] [--png 40] [--size 2000] [--source DIR] [--resize letterbox]

Naive loop (what a user would write): open → convert('RGB') → resize(224) → np.asarray →
h5py write, one process. xvhpc: reduced-scale JPEG decode, one channel for grayscale X-rays,
HDF5 shards, 1 and 2 worker processes.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import h5py
import numpy as np
import yaml
from common import cpu_note, make_highres, timed, workdir
from PIL import Image

from xvhpc.cli import main as xvhpc


def naive(files: list[Path], out: Path, size: int = 224) -> int:
    with h5py.File(out, "w") as h5:
        images = h5.create_dataset(
            "images", (len(files), size, size, 3), dtype="uint8", chunks=(1, size, size, 3)
        )
        for i, path in enumerate(files):
            with Image.open(path) as im:
                images[i] = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
    return len(files)


def ours(
    source: Path, work: Path, workers: int, channels: int, resize: str, size: int = 224
) -> float:
    """Seconds for `xvhpc ingest` alone (compiling is a login-node step, not timed)."""
    data = {
        "source": str(source),
        "image_size": size,
        "channels": channels,
        "resize": resize,
        "shards": 4,
    }
    (work / "spec.yaml").write_text(yaml.safe_dump({"name": "bench", "data": data}))
    run = work / f"run-{workers}-{channels}"
    shutil.rmtree(run, ignore_errors=True)
    assert xvhpc(["compile", str(work / "spec.yaml"), "--out", str(run)]) == 0
    argv = ["ingest", "--run-dir", str(run), "--shard", "all", "--merge", "--workers", str(workers)]
    seconds, code = timed(xvhpc, argv)
    assert code == 0
    return seconds


def bench(label: str, source: Path, work: Path, resize: str) -> None:
    files = sorted(source.rglob("*.*"))
    if not files:
        return
    t_naive, n = timed(naive, files, work / "naive.h5")
    print(f"\n{label}: {n} files")
    print(f"  naive PIL loop (1 process, RGB)        {n / t_naive:7.1f} img/s")
    results = {}
    for workers, channels in ((1, 3), (1, 1), (2, 1)):
        t = ours(source, work, workers, channels, resize)
        results[(workers, channels)] = n / t
        print(
            f"  xvhpc ingest, {workers} worker(s), {channels} channel(s)  {n / t:7.1f} img/s  ({n / t / (n / t_naive):.2f}x naive)"
        )
    print(
        f"  per core, same RGB output:  {results[(1, 3)] / (n / t_naive):.2f}x   grayscale: {results[(1, 1)] / (n / t_naive):.2f}x"
    )
    print(f"  1 → 2 workers:              {results[(2, 1)] / results[(1, 1)]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jpeg", type=int, default=300)
    parser.add_argument("--png", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=10, help="times each --source file is used")
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument(
        "--source", type=Path, help="a folder of real images (JPEG/PNG) to use as well"
    )
    parser.add_argument(
        "--resize", default="letterbox", choices=["letterbox", "squash", "center_crop"]
    )
    args = parser.parse_args()
    work = workdir("ingest")
    jpeg = make_highres(work / "jpeg", args.jpeg, 0, args.size)
    png = make_highres(work / "png", 0, args.png, args.size, seed=1)
    print(
        f"ingest benchmark, {args.size} px X-ray-like images, → 224 px ({args.resize}); {cpu_note()}"
    )
    bench("synthetic high-res JPEG", jpeg, work, args.resize)
    bench("synthetic high-res PNG", png, work, args.resize)
    if args.source:
        for ext in ("jpg", "png"):
            files = sorted(p for p in args.source.rglob(f"*.{ext}"))
            if files:
                folder = work / f"real-{ext}"
                for i, f in enumerate(
                    files * args.repeat
                ):  # two pseudo-classes, so ingest has a split to make
                    (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
                    (folder / f"c{i % 2}" / f"{i}-{f.name}").symlink_to(f.resolve())
                bench(f"real {ext.upper()} from {args.source}", folder, work, args.resize)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
