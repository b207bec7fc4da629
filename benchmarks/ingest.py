"""Ingest speed: a naive PIL loop vs `xvhpc ingest`, on the same high-res JPEG and PNG files.

    .venv/bin/python benchmarks/ingest.py [--jpeg 300] [--png 40] [--size 2000] [--quality 75]
                                          [--source DIR] [--min-side 1500] [--resize letterbox]

Naive loop (what a user would write): open → convert('RGB') → resize(224, BILINEAR, cheaper than
PIL's default BICUBIC) → np.asarray → h5py write, one process. xvhpc ingest: reduced-scale JPEG
decode, HDF5 shards; 1 worker (per core; RGB output like the naive loop, and grayscale), then 2
workers. Each side is timed ``--runs`` times, best run kept (both sides alike).

Synthetic JPEGs are saved at PIL's default quality 75, the quality 45 of the 50 real X-rays in
the COVID-19 figure-1 set use (0.3–1.2 bits/pixel; the script prints the files' bits/pixel).
``--source`` uses only files whose long side is at least ``--min-side`` px, repeated (as
symlinks) up to ``--min-images``. 600 images per set: enough that a run's constants (listing
the folder, starting worker processes, writing the manifest: ~30 ms) do not hide the rate.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import yaml
from common import cpu_note, make_highres, timed, workdir
from PIL import Image

import xvhpc.steps.ingest  # noqa: F401  (imported before timing, like the naive loop's modules)
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


def best(runs: int, fn: Callable, *args) -> float:
    """Fastest of ``runs`` timings of ``fn(*args)`` in seconds."""
    return min(timed(fn, *args)[0] for _ in range(runs))


def ingest(work: Path, source: Path, workers: int, channels: int, resize: str, shards: int) -> None:
    """`xvhpc ingest` of every shard + merge into a fresh run dir (compiling is not timed)."""
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    data = {"source": str(source), "image_size": 224, "channels": channels, "resize": resize}
    spec = {"name": "bench", "data": {**data, "shards": shards}}
    (work / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert xvhpc(["compile", str(work / "spec.yaml"), "--out", str(run)]) == 0
    argv = ["ingest", "--run-dir", str(run), "--shard", "all", "--merge"]
    assert xvhpc([*argv, "--workers", str(workers)]) == 0


def describe(files: list[Path]) -> str:
    sides, bpp = [], []
    for path in set(files):
        with Image.open(path) as im:
            sides.append(max(im.size))
            bpp.append(8 * path.stat().st_size / (im.width * im.height))
    return (
        f"{len(files)} files ({len(set(files))} distinct), long side {min(sides)}–{max(sides)} px, "
        f"median {statistics.median(bpp):.2f} bits/pixel"
    )


def bench(label: str, source: Path, work: Path, resize: str, runs: int) -> None:
    files = sorted(p for p in source.rglob("*.*"))
    if not files:
        return
    print(f"\n{label}: {describe([f.resolve() for f in files])}")
    n = len(files)
    t_naive = best(runs, naive, files, work / "naive.h5")
    print(f"  naive PIL loop, 1 process, RGB                      {n / t_naive:7.1f} img/s")
    ingest(work, source, 1, 3, resize, 1)  # warm-up, untimed: lazy imports, file cache
    rates = {}
    for workers, channels, shards in ((1, 3, 4), (1, 1, 4), (2, 3, 4), (1, 3, 1), (2, 3, 1)):
        t = best(runs, ingest, work, source, workers, channels, resize, shards)
        rates[workers, channels, shards] = n / t
        print(
            f"  xvhpc ingest, {workers} worker(s), {'RGB ' if channels == 3 else 'gray'}, {shards} shard(s)"
            f"  {n / t:7.1f} img/s  {t_naive / t:5.2f}x naive"
        )
    print(
        f"  => per core, same RGB output: {rates[1, 3, 4] * t_naive / n:.2f}x"
        f"  (grayscale output {rates[1, 1, 4] * t_naive / n:.2f}x)\n"
        f"  => 1 → 2 workers: {rates[2, 3, 4] / rates[1, 3, 4]:.2f}x with 4 shards (whole shards"
        f" in parallel), {rates[2, 3, 1] / rates[1, 3, 1]:.2f}x with 1 shard (samples in parallel)"
    )


def real_subset(
    source: Path, folder: Path, suffixes: tuple[str, ...], min_side: int, min_images: int
) -> Path | None:
    """Links to ``source`` files of one format with a long side ≥ ``min_side``, in two classes."""
    big = []
    for path in sorted(source.rglob("*")):
        if path.suffix.lower() in suffixes:
            with Image.open(path) as im:
                if max(im.size) >= min_side:
                    big.append(path.resolve())
    if not big:
        return None
    repeat = -(-min_images // len(big))
    for i, path in enumerate(big * repeat):  # two pseudo-classes, so ingest has a split to make
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (folder / f"c{i % 2}" / f"{i:05d}{path.suffix}").symlink_to(path)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jpeg", type=int, default=600)
    parser.add_argument("--png", type=int, default=40)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--quality", type=int, default=75, help="of the synthetic JPEGs")
    parser.add_argument("--source", type=Path, help="a folder of real images (JPEG/PNG) as well")
    parser.add_argument("--min-side", type=int, default=1500, help="of the --source files used")
    parser.add_argument("--min-images", type=int, default=600, help="--source files repeated to")
    parser.add_argument("--runs", type=int, default=2, help="timings per measurement, best kept")
    parser.add_argument(
        "--resize", default="letterbox", choices=["letterbox", "squash", "center_crop"]
    )
    args = parser.parse_args()
    work = workdir("ingest")
    print(f"ingest benchmark → 224 px ({args.resize}), best of {args.runs}; {cpu_note()}")
    if args.jpeg:
        jpeg = make_highres(work / "jpeg", args.jpeg, 0, args.size, quality=args.quality)
        bench(
            f"synthetic {args.size} px JPEG, quality {args.quality}",
            jpeg,
            work,
            args.resize,
            args.runs,
        )
    if args.png:
        png = make_highres(work / "png", 0, args.png, args.size, seed=1)
        bench(f"synthetic {args.size} px PNG", png, work, args.resize, args.runs)
    for kind, suffixes in (("JPEG", (".jpg", ".jpeg")), ("PNG", (".png",))):
        if not args.source:
            break
        folder = work / f"real-{kind}"
        real = real_subset(args.source, folder, suffixes, args.min_side, args.min_images)
        if real is None:
            print(f"\nno {kind} in {args.source} has a side ≥ {args.min_side} px")
            continue
        label = f"real {kind} ≥ {args.min_side} px from {args.source}"
        bench(label, real, work, args.resize, args.runs)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
