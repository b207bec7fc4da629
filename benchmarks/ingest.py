"""Ingest cost per image, per format, in one run: plain PIL loops / xvhpc / the decode floor.

    .venv/bin/python benchmarks/ingest.py [--jpeg 200] [--png 30] [--png-rgb 20] [--size 2000]
                                          [--quality 75] [--source DIR] [--min-side 1500]
                                          [--resize letterbox] [--runs 2] [--scaling]

Every figure is CPU seconds of one process (``time.process_time``), shown as images/s per
core: on a shared machine CPU time moves far less than wall time (±20 % still). Rows per format:

- naive loop: open → convert('RGB') → resize(224, BILINEAR) → h5py (RGB, what most users write)
- plain gray loop: open → convert('L') → thumbnail(224) → paste on a 224 canvas → h5py
- thumbnail loop: open → thumbnail(224) → convert('L') → paste → h5py; ``thumbnail`` before
  the conversion lets PIL use the reduced-scale JPEG decode: the strongest plain baseline
- floor: the cheapest decode that still yields ≥ 224 px, nothing else (JPEG: PIL's
  reduced-scale DCT ``draft``; PNG: the faster of libspng (pyspng) and PIL, full decode)
- xvhpc ingest, 1 worker, gray and RGB output: the whole step (listing, decode, resize, hash,
  HDF5 shards, sha256, manifest), compiled beforehand

The target (issue 16): xvhpc gray within 1.3× the floor. ``--scaling`` adds the 1 → 2
worker wall-clock runs (only meaningful on an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import yaml
from common import cpu_note, make_highres, workdir
from PIL import Image

import xvhpc.pipeline.ingest  # noqa: F401  (imported before timing, like the loops' modules)
from xvhpc.cli import main as xvhpc
from xvhpc.data import png as fast_png

SIZE = 224


def _h5(out: Path, n: int, channels: int) -> tuple[h5py.File, h5py.Dataset]:
    h5 = h5py.File(out, "w")
    shape = (n, SIZE, SIZE, channels)
    return h5, h5.create_dataset("images", shape, dtype="uint8", chunks=(1, *shape[1:]))


def naive(files: list[Path], out: Path) -> None:
    h5, images = _h5(out, len(files), 3)
    with h5:
        for i, path in enumerate(files):
            with Image.open(path) as im:
                images[i] = np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))


def _letterbox(im: Image.Image) -> np.ndarray:
    canvas = Image.new("L", (SIZE, SIZE), 0)
    canvas.paste(im, ((SIZE - im.width) // 2, (SIZE - im.height) // 2))
    return np.asarray(canvas)


def plain_gray(files: list[Path], out: Path) -> None:
    h5, images = _h5(out, len(files), 1)
    with h5:
        for i, path in enumerate(files):
            with Image.open(path) as im:
                gray = im.convert("L")
                gray.thumbnail((SIZE, SIZE))
                images[i] = _letterbox(gray)[:, :, None]


def thumbnail_gray(files: list[Path], out: Path) -> None:
    h5, images = _h5(out, len(files), 1)
    with h5:
        for i, path in enumerate(files):
            with Image.open(path) as im:
                im.thumbnail((SIZE, SIZE))  # draft first: reduced-scale JPEG decode
                images[i] = _letterbox(im.convert("L"))[:, :, None]


def floor_jpeg(files: list[Path], _out: Path) -> None:
    for path in files:
        with Image.open(path) as im:
            scale = SIZE / max(im.size)
            im.draft("L", (round(im.width * scale), round(im.height * scale)))
            im.load()


def floor_png_pil(files: list[Path], _out: Path) -> None:
    for path in files:
        Image.open(io.BytesIO(path.read_bytes())).load()


def floor_png_spng(files: list[Path], _out: Path) -> None:
    import pyspng

    for path in files:
        pyspng.load(path.read_bytes())


def cpu(runs: int, fn: Callable, *args) -> float:
    """Fewest CPU seconds of ``runs`` calls of ``fn(*args)`` (this process, all its threads)."""
    times = []
    for _ in range(runs):
        start = time.process_time()
        fn(*args)
        times.append(time.process_time() - start)
    return min(times)


def wall(runs: int, fn: Callable, *args) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def compile_run(work: Path, source: Path, channels: int, resize: str, shards: int) -> Path:
    run = work / f"run-{channels}-{shards}"
    shutil.rmtree(run, ignore_errors=True)
    data = {"source": str(source), "image_size": SIZE, "channels": channels, "resize": resize}
    (work / "spec.yaml").write_text(
        yaml.safe_dump({"name": "bench", "data": {**data, "shards": shards}})
    )
    assert xvhpc(["compile", str(work / "spec.yaml"), "--out", str(run)]) == 0
    return run


def ingest(run: Path, workers: int) -> None:
    """`xvhpc ingest` of every shard + merge (shards of an earlier call removed first)."""
    for path in run.glob("shards/*"):
        path.unlink()
    argv = ["ingest", "--run-dir", str(run), "--shard", "all", "--merge", "--workers", str(workers)]
    assert xvhpc(argv) == 0


def describe(files: list[Path]) -> str:
    sides, bpp, modes = [], [], set()
    for path in set(files):
        with Image.open(path) as im:
            sides.append(max(im.size))
            modes.add(im.mode)
            bpp.append(8 * path.stat().st_size / (im.width * im.height))
    return (
        f"{len(files)} files ({len(set(files))} distinct, {'/'.join(sorted(modes))}), long side "
        f"{min(sides)}–{max(sides)} px, median {statistics.median(bpp):.2f} bits/pixel"
    )


def row(label: str, seconds: float, n: int, floor: float, xv: float | None = None) -> None:
    rate = n / seconds
    extra = f"  xvhpc {seconds / xv:5.2f}x faster" if xv else ""
    print(f"  {label:44s} {rate:7.1f} img/s  {seconds / floor:5.2f}x floor{extra}")


def bench(label: str, source: Path, work: Path, resize: str, runs: int, scaling: bool) -> dict:
    files = sorted(p for p in source.rglob("*.*"))
    n = len(files)
    print(f"\n{label}: {describe([f.resolve() for f in files])}")
    is_png = files[0].suffix.lower() == ".png"
    out = work / "loop.h5"
    floors = (
        {"PIL": cpu(runs, floor_png_pil, files, out)}
        if is_png
        else {"PIL draft": cpu(runs, floor_jpeg, files, out)}
    )
    if is_png and fast_png.enabled():
        floors["libspng"] = cpu(runs, floor_png_spng, files, out)
    floor_by, floor = min(floors.items(), key=lambda kv: kv[1])
    loops = {
        "naive loop (RGB resize)": cpu(runs, naive, files, out),
        "plain gray loop (convert L → thumbnail)": cpu(runs, plain_gray, files, out),
        "thumbnail loop (thumbnail → convert L)": cpu(runs, thumbnail_gray, files, out),
    }
    ours = {}
    for channels in (1, 3):
        run = compile_run(work, source, channels, resize, 1)
        ingest(run, 1)  # warm-up, untimed: lazy imports, file cache
        ours[channels] = cpu(runs, ingest, run, 1)
    for name, seconds in loops.items():
        row(name, seconds, n, floor, ours[1])
    for name, seconds in floors.items():
        row(f"floor: {name} decode only", seconds, n, floor)
    row("xvhpc ingest, 1 worker, gray", ours[1], n, floor)
    row("xvhpc ingest, 1 worker, RGB", ours[3], n, floor)
    best_loop = min(loops.values())
    print(
        f"  => xvhpc gray: {ours[1] / floor:.2f}x the floor ({floor_by}; target ≤ 1.3), "
        f"{loops['naive loop (RGB resize)'] / ours[1]:.2f}x the naive loop, "
        f"{best_loop / ours[1]:.2f}x the best plain loop"
    )
    if scaling:
        scale(work, source, resize, runs)
    return {"floor": floor, "xvhpc": ours[1], "loops": loops}


def scale(work: Path, source: Path, resize: str, runs: int) -> None:
    """1 → 2 workers, wall clock, with 4 shards (whole shards in parallel) and 1 shard."""
    for shards in (4, 1):
        run = compile_run(work, source, 3, resize, shards)
        one, two = (wall(runs, ingest, run, w) for w in (1, 2))
        print(f"  1 → 2 workers, {shards} shard(s), wall clock: {one / two:.2f}x")


def real_subset(
    source: Path, folder: Path, suffixes: tuple[str, ...], min_side: int, min_images: int
) -> Path | None:
    """Copies of ``source`` files of one format with a long side ≥ ``min_side``, in two classes."""
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
        shutil.copyfile(path, folder / f"c{i % 2}" / f"{i:05d}{path.suffix}")  # ingest skips links
    return folder


def as_rgb(folder: Path, out: Path) -> Path:
    """The same PNGs stored as RGB (as many exported X-rays are): libspng's best case."""
    for path in sorted(folder.rglob("*.png")):
        target = out / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            im.convert("RGB").save(target)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jpeg", type=int, default=200)
    parser.add_argument("--png", type=int, default=30, help="gray PNGs")
    parser.add_argument("--png-rgb", type=int, default=20, help="of those, saved again as RGB")
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--quality", type=int, default=75, help="of the synthetic JPEGs")
    parser.add_argument("--source", type=Path, help="a folder of real images (JPEG/PNG) as well")
    parser.add_argument("--min-side", type=int, default=1500, help="of the --source files used")
    parser.add_argument("--min-images", type=int, default=60, help="--source files repeated to")
    parser.add_argument("--runs", type=int, default=2, help="timings per measurement, best kept")
    parser.add_argument("--scaling", action="store_true", help="also 1 → 2 workers (wall)")
    parser.add_argument(
        "--resize", default="letterbox", choices=["letterbox", "squash", "center_crop"]
    )
    args = parser.parse_args()
    work = workdir("ingest")
    print(f"ingest benchmark → {SIZE} px ({args.resize}), CPU s, best of {args.runs}; {cpu_note()}")
    print(f"libspng (pyspng) fast PNG path: {'on' if fast_png.enabled() else 'OFF'}")
    sets = []
    if args.jpeg:
        jpeg = make_highres(work / "jpeg", args.jpeg, 0, args.size, quality=args.quality)
        sets.append((f"synthetic {args.size} px JPEG, quality {args.quality}", jpeg))
    if args.png:
        png = make_highres(work / "png", 0, args.png, args.size, seed=1)
        sets.append((f"synthetic {args.size} px PNG, gray", png))
        if args.png_rgb:
            subset = work / "png-sub"
            for path in sorted(png.rglob("*.png"))[: args.png_rgb]:
                (subset / path.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, subset / path.parent.name / path.name)
            sets.append((f"synthetic {args.size} px PNG, RGB", as_rgb(subset, work / "png-rgb")))
    for kind, suffixes in (("JPEG", (".jpg", ".jpeg")), ("PNG", (".png",))):
        if not args.source:
            break
        folder = work / f"real-{kind}"
        real = real_subset(args.source, folder, suffixes, args.min_side, args.min_images)
        if real is None:
            print(f"\nno {kind} in {args.source} has a side ≥ {args.min_side} px")
            continue
        sets.append((f"real {kind} ≥ {args.min_side} px from {args.source}", real))
    for label, folder in sets:
        bench(label, folder, work, args.resize, args.runs, args.scaling)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
