"""Labelled video frames: what a user would otherwise do vs xvhpc's seek to each named frame.

    .venv/bin/python benchmarks/video_frames.py [--seconds 120] [--fps 30] [--size 256]
                                                [--labelled 60] [--gop 250]

One H.264 video (``--gop``: frames between keyframes, x264's default 250), with ``--labelled``
frames named by time (``clip.mp4#t=<seconds>``, spread evenly, as a labeller's every Nth frame).
Baselines, each ending with the labelled frames as arrays:
  1. extract every frame to PNG (``ffmpeg -i clip.mp4 frames/%06d.png``, done with PyAV here, the
     same FFmpeg libraries), then read the labelled PNGs: the usual path into an image tool;
  2. decode the video from its start once per labelled frame (a reader without seeking).
xvhpc: ``decode(video, name="clip.mp4#t=…")`` per labelled frame: seek to the keyframe before
the time, decode forward to the nearest frame. All three give identical pixels (checked).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from common import cpu_note
from PIL import Image

from xvhpc.data.decode import DecodeOptions, decode
from xvhpc.data.video import VideoOptions


def make_video(path: Path, seconds: int, fps: int, size: int, gop: int) -> None:
    """A moving gradient with noise (so H.264 spends real bits), libx264 at its default GOP."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"g": str(gop), "crf": "23"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(seconds * fps):
            base = (xx + 3 * i) % 256 / 2 + (yy + i) % 256 / 2 + rng.normal(0, 8, (size, size))
            image = np.repeat(np.clip(base, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def extract_all(video: Path, out: Path, wanted: list[int]) -> list[np.ndarray]:
    """Baseline 1: every frame to PNG, then the labelled ones read back."""
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            frame.to_image().save(out / f"{i:06d}.png", compress_level=1)
    return [np.asarray(Image.open(out / f"{i:06d}.png")) for i in wanted]


def from_start(video: Path, wanted: list[int]) -> list[np.ndarray]:
    """Baseline 2: for each labelled frame, decode from the start up to it."""
    out = []
    for target in wanted:
        with av.open(str(video)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i == target:
                    out.append(frame.to_ndarray(format="rgb24"))
                    break
    return out


def ours(video: Path, wanted: list[int], fps: int) -> list[np.ndarray]:
    opts = DecodeOptions(stored_pixels=True, expand_gray=False, video=VideoOptions())
    return [decode(video, opts, name=f"clip.mp4#t={i / fps:.3f}")[0] for i in wanted]


def timed(fn, *args) -> tuple[float, list[np.ndarray]]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=int, default=120)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--labelled", type=int, default=60)
    p.add_argument("--gop", type=int, default=250)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        video = work / "clip.mp4"
        make_video(video, args.seconds, args.fps, args.size, args.gop)
        total = args.seconds * args.fps
        wanted = [round(k * (total - 1) / max(1, args.labelled - 1)) for k in range(args.labelled)]
        (work / "frames").mkdir()
        t_png, a = timed(extract_all, video, work / "frames", wanted)
        t_start, b = timed(from_start, video, wanted)
        t_ours, c = timed(ours, video, wanted, args.fps)
    assert all(
        np.array_equal(x, y) and np.array_equal(x, z) for x, y, z in zip(a, b, c, strict=True)
    )
    print(cpu_note())
    print(f"video: {args.seconds} s at {args.fps} fps, {args.size} px, H.264 GOP {args.gop}; "
          f"{args.labelled} labelled frames (identical pixels on all three sides)")  # fmt: skip
    print(f"  baseline 1, extract every frame to PNG, read the labelled: {t_png:8.2f} s")
    print(f"  baseline 2, decode from the start per labelled frame:      {t_start:8.2f} s")
    print(f"  xvhpc, seek to each named frame (clip.mp4#t=):             {t_ours:8.2f} s")
    print(f"  ratio: {t_png / t_ours:.1f}x baseline 1, {t_start / t_ours:.1f}x baseline 2")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
