"""Shared helpers for the benchmark scripts (each prints both sides and the ratio in one run)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xvhpc.data.synth import xray  # noqa: E402


def make_highres(
    folder: Path, jpeg: int, png: int, size: int = 2000, seed: int = 0, quality: int = 75
) -> Path:
    """High-resolution X-ray-like images in two class folders (JPEG and PNG)."""
    rng = np.random.default_rng(seed)
    classes = ("covid19", "normal")
    for i in range(jpeg + png):
        label = classes[i % 2]
        (folder / label).mkdir(parents=True, exist_ok=True)
        small = xray(label, 512, rng)
        big = Image.fromarray(small).resize((size, int(size * 0.85)), Image.BICUBIC)
        noise = rng.normal(0, 1.5, (big.height, big.width))  # detector noise; film-like, not white
        big = Image.fromarray(np.clip(np.asarray(big, np.float32) + noise, 0, 255).astype(np.uint8))
        if i < jpeg:
            big.save(folder / label / f"{i:04d}.jpg", quality=quality)
        else:
            big.save(folder / label / f"{i:04d}.png")
    return folder


def compile_and_ingest(work: Path, spec: dict, quiet: bool = True) -> Path:
    """Write ``spec``, compile it for the local site and ingest its shards; return the run dir."""
    import subprocess

    import yaml

    (work / "spec.yaml").write_text(yaml.safe_dump(spec))
    run = work / "run"
    for argv in (
        ["compile", str(work / "spec.yaml"), "--out", str(run)],
        ["ingest", "--run-dir", str(run), "--shard", "all", "--merge"],
    ):
        subprocess.run([sys.executable, "-m", "xvhpc", *argv], check=True, capture_output=quiet)
    return run


def workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"xvhpc-bench-{name}-"))


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def cpu_note() -> str:
    return f"{os.cpu_count()} CPUs; numbers on a shared machine move by ±20% run to run"
