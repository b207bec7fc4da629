"""Clips of a video's frames (numpy only, no torch): the sliding windows and the clips centred
on each true segment, each labelled by the action that covers most of it."""

from __future__ import annotations

from collections.abc import Sequence

from .info import CLIP_FRAMES, CLIP_STRIDE

COVER = 0.5  # a clip is an action's when the action covers at least this share of it


def frame_step(times: Sequence[float]) -> float:
    """The time one frame lasts (the median gap; 1 s for a single frame)."""
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False) if b > a)
    return gaps[len(gaps) // 2] if gaps else 1.0


def span(times: Sequence[float], first: int, frames: int = CLIP_FRAMES) -> tuple[float, float]:
    """(start, end) seconds of the clip of ``frames`` frames from index ``first``."""
    last = min(first + frames, len(times)) - 1
    return float(times[first]), float(times[last]) + frame_step(times)


def windows(count: int, frames: int = CLIP_FRAMES, stride: int = CLIP_STRIDE) -> list[int]:
    """First frame of each sliding window over ``count`` frames (the last one ends the video;
    a video shorter than a clip is one window, its frames repeated by ``clip_indices``)."""
    if count <= frames:
        return [0]
    starts = list(range(0, count - frames + 1, stride))
    if starts[-1] != count - frames:
        starts.append(count - frames)
    return starts


def clip_indices(first: int, count: int, frames: int = CLIP_FRAMES) -> list[int]:
    """The ``frames`` frame indices of a clip from ``first`` (the last frame repeated past
    the end of a short video)."""
    return [min(first + i, count - 1) for i in range(frames)]


def centred(
    times: Sequence[float], segments: Sequence[tuple], frames: int = CLIP_FRAMES
) -> list[int]:
    """First frame of the clip centred on each true segment (around the action)."""
    out = []
    for start, end, _ in segments:
        middle = (start + end) / 2
        nearest = min(range(len(times)), key=lambda i: abs(times[i] - middle))
        out.append(max(0, min(nearest - frames // 2, max(len(times) - frames, 0))))
    return out


def label_of(clip: tuple[float, float], segments: Sequence[tuple]) -> int:
    """The class covering most of ``clip`` if it covers ``COVER`` of it, else 0 (background)."""
    start, end = clip
    cover: dict[int, float] = {}
    for s, e, c in segments:
        cover[int(c)] = cover.get(int(c), 0.0) + max(0.0, min(e, end) - max(s, start))
    if not cover:
        return 0
    best = max(sorted(cover), key=lambda c: cover[c])
    return best if cover[best] >= COVER * (end - start) else 0
