"""``xvhpc demo-data --task action``: short synthetic videos with known action segments.

Each video (8 fps, 6 s, MP4/MPEG-4) is a dark, noisy, slowly flickering background in which,
during each of its one or two segments, a bright shape appears, moves and disappears: a square
sliding right (``square``) or a disc sliding down (``disc``). Writes ``videos/`` and
``segments.csv`` (``video,label,start,end``); deterministic for a seed.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from ...data.synth import encode_video

ACTIONS = ("square", "disc")
FPS, SECONDS = 8, 6.0


def plan(rng: np.random.Generator) -> list[tuple[float, float, str]]:
    """One or two segments (1.5-2.5 s, apart by at least 1 s) of random actions."""
    first = rng.uniform(0.25, 1.0)
    out = [(first, first + rng.uniform(1.5, 2.5), str(rng.choice(ACTIONS)))]
    gap = out[0][1] + rng.uniform(1.0, 1.25)
    if gap + 1.5 <= SECONDS - 0.1:
        out.append((gap, min(gap + rng.uniform(1.5, 2.5), SECONDS - 0.1), str(rng.choice(ACTIONS))))
    return [(round(s, 3), round(e, 3), a) for s, e, a in out]


def frame(t: float, size: int, segments, rng: np.random.Generator) -> np.ndarray:
    """The RGB frame at time ``t``: the background plus the shape of the segment at ``t``."""
    base = 30 + 10 * np.sin(t * 1.3) + rng.normal(0, 6, (size, size))
    image = np.repeat(base[:, :, None], 3, axis=2)
    yy, xx = np.mgrid[0:size, 0:size]
    for start, end, action in segments:
        if start <= t < end:
            p = (t - start) / (end - start)  # 0 → 1 across the segment: appear, move, leave
            r = size * 0.16
            if action == "square":
                cx, cy = size * (0.2 + 0.6 * p), size * 0.5
                inside = (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
                image[inside] = (230, 200, 60)
            else:
                cx, cy = size * 0.5, size * (0.2 + 0.6 * p)
                inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
                image[inside] = (60, 200, 230)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_video(path: Path, size: int, segments, rng: np.random.Generator) -> None:
    frames = (frame(i / FPS, size, segments, rng) for i in range(int(FPS * SECONDS)))
    encode_video(path, frames, FPS)


def make_action_dataset(out: str | Path, videos: int = 12, size: int = 32, seed: int = 0) -> Path:
    """``videos/clipNNN.mp4`` and ``segments.csv`` under ``out``; returns the CSV's path."""
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for n in range(videos):
        segments = plan(rng)
        name = f"videos/clip{n:03d}.mp4"
        write_video(out / name, size + size % 2, segments, rng)
        rows += [[name, a, s, e] for s, e, a in segments]
    with open(out / "segments.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video", "label", "start", "end"])
        writer.writerows(rows)
    return out / "segments.csv"


def main(args: argparse.Namespace) -> int:
    videos = 2 * args.per_class
    path = make_action_dataset(args.out, videos, args.size or 32, args.seed)
    print(
        f"wrote {videos} videos with segments of {len(ACTIONS)} actions ({', '.join(ACTIONS)}): {path}"
    )
    return 0
