"""Labels that address one frame of a video: ``clip.mp4#t=1.500`` or ``clip.mp4#frame=45``.

Detection boxes and segmentation masks belong to one frame, not to a whole video, so a COCO
``file_name``, a CSV path or a mask's place names the frame with a W3C media fragment: ``#t=``
seconds from the stream's start (what ``xvhpc`` names video-frame records, ``video.frame_source``)
or ``#frame=`` a 0-based frame number counted from the stream's start (as CVAT and FFmpeg
number frames; variable-rate videos too). Each such name is one sample: ingest seeks to the
keyframe before the time and decodes forward to the frame nearest it (``read_frame``), and one
open reader per process decodes on to the next frame of the same video when it is near, so
labelling many frames of a video costs about one pass over it, never the whole video in memory.

The frames of one video are one group, so the split never puts a video on both sides; a
group column (patients) that names a video's frames differently joins those groups
(``one_group_per_video``). This module is login-side safe: PyAV is imported only to read.
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import _unusable, display_name
from .sample import Sample
from .video import (
    TIME_SLACK,
    VIDEO_SUFFIXES,
    BadVideo,
    Header,
    VideoOptions,
    _regular,
    _scaled,
    header,
    open_video,
    stream_frames,
)

_FRAGMENT = re.compile(r"(?s)(?P<video>.+)#(?:t=(?P<t>\d{1,9}(?:\.\d{1,9})?)|frame=(?P<n>\d{1,9}))")
DEFAULT_PERIOD = 0.04  # seconds a frame is shown where the stream states no rate (25 fps)
FORMS = "<video>#t=<seconds> or <video>#frame=<number>"


@dataclass(frozen=True)
class FrameRef:
    """One frame of a video as a label names it: by time (``seconds``) or number (``index``)."""

    video: str  # the video's path as listed (relative to the labels' folder)
    seconds: float | None = None
    index: int | None = None

    @property
    def name(self) -> str:
        """The frame's name in shards and reports (times to the millisecond, as records are)."""
        if self.index is not None:
            return f"{self.video}#frame={self.index}"
        return f"{self.video}#t={self.seconds or 0.0:.3f}"


def frame_ref(name: str) -> FrameRef | None:
    """The frame a listed name addresses, None for a name that is no ``<video>#t=|#frame=``
    (an image, or a video listed whole)."""
    found = _FRAGMENT.fullmatch(name)
    if not found or not found["video"].lower().endswith(VIDEO_SUFFIXES):
        return None
    if found["n"] is not None:
        return FrameRef(found["video"], index=int(found["n"]))
    return FrameRef(found["video"], seconds=float(found["t"]))


def frame_order(name: str) -> tuple[str, int, float]:
    """A sort key that puts a video's named frames in time order (``t=2`` before ``t=10``),
    so ingest's chunks read each video forward; other names sort as themselves. Frame numbers
    and seconds are not one scale (the rate is in the video), so a video's ``#frame=`` names
    come first, then its ``#t=`` names: two forward passes, not a seek per frame."""
    ref = frame_ref(name)
    if ref is None:
        return name, -1, -math.inf
    if ref.index is not None:
        return ref.video, 0, float(ref.index)
    return ref.video, 1, float(ref.seconds or 0.0)


@dataclass(frozen=True)
class Listed:
    """A listed name resolved to the file to read: ``key`` tells two frames of a video apart."""

    file: Path  # resolved: the image, or the video a frame is read from
    shown: str  # the sample's name (``display_name``; a frame's name normalised)
    video: str | None  # the video's shown name when the name addresses a frame

    @property
    def key(self) -> tuple[Path, str]:
        return self.file, self.shown.rpartition("#")[2] if self.video else ""


def locate(base: Path, name: str, follow_links: bool) -> tuple[Listed | None, str | None]:
    """(what to read, None) for a name listed under ``base`` (a frame's video, or the file),
    or (None, why not): missing, outside the data, not regular, or a whole video for a task
    whose labels belong to one frame."""
    ref = frame_ref(name)
    target = base / (ref.video if ref else name)
    if why := fragment_problem(base, name) or _unusable(target, base, follow_links):
        return None, why
    if ref is None and name.lower().endswith(VIDEO_SUFFIXES):
        return None, f"a video: name the labelled frame as {FORMS}"
    shown = display_name(ref.name if ref else name)
    return Listed(target.resolve(), shown, display_name(ref.video) if ref else None), None


def fragment_problem(base: Path, name: str) -> str | None:
    """Why ``<video>#<fragment>`` listed under ``base`` names no frame (``#t=1,5``, ``#t=-1``,
    ``#T=1``, ten digits), or None: a typo is told as such, not as "file not found" (a file
    really named so, ``clip.mp4#1.png``, is itself)."""
    video, hashed, fragment = name.rpartition("#")
    if not hashed or not video.lower().endswith(VIDEO_SUFFIXES) or frame_ref(name) is not None:
        return None
    try:
        if os.path.lexists(base / name):
            return None
    except ValueError:  # a NUL byte: the caller says so
        return None
    return f"#{display_name(fragment)} names no frame: name one as {FORMS}"


def one_group_per_video(samples: list[Sample], videos: dict[str, str]) -> list[Sample]:
    """``samples`` with every frame of a video in one group: the video's name where no group
    was given, and groups that share a video joined (named by their smallest name), so the
    split and the folds never put one video on both sides. ``videos``: sample name → video.
    A video is its file (``Sample.path``), not its spelling: ``./v.mp4#t=1`` and
    ``v.mp4#t=2`` are frames of one video, named by its normalised name (``v.mp4``)."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(key: tuple[str, str]) -> tuple[str, str]:
        # path halving: without it, groups joined in descending order chain one link per
        # frame and 100,000 frames cost ~10^10 steps (an hour) at catalog time
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def keys(s: Sample) -> list[tuple[tuple[str, str], str]]:
        """(what joins, the name it gives) of the sample's video and group."""
        found = [(("video", s.path), os.path.normpath(videos[s.rel]))] if s.rel in videos else []
        return found + ([(("group", s.group), s.group)] if s.group is not None else [])

    for s in samples:
        first, *rest = [key for key, _ in keys(s)] or [("", "")]
        for key in rest:
            a, b = root(first), root(key)
            parent[max(a, b)] = min(a, b)
    names: dict[tuple[str, str], str] = {}
    for s in samples:
        for key, name in keys(s):
            names[root(key)] = min(names.get(root(key), name), name)
    return [replace(s, group=names[root(keys(s)[0][0])]) if keys(s) else s for s in samples]


def video_size(file: str | os.PathLike[str]) -> tuple[int, int] | None:
    """A video's frame width and height from its container's header (no frame decoded), None
    where it cannot tell: boxes are checked against it as against an image's header. Cached
    per file (path, inode, size, mtime): a COCO naming 100,000 frames of one long video
    opens (and parses the index of) that video once, not once a frame."""
    try:
        info = os.stat(file)
    except (OSError, ValueError):
        return None
    return _video_size(os.fspath(file), info.st_ino, info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _video_size(file: str, *identity: int) -> tuple[int, int] | None:
    """``video_size`` of one version of a file (``identity`` keys the cache)."""
    try:
        with open_video(file) as container:
            context = container.streams.video[0].codec_context
            return (int(context.width), int(context.height)) if context.width else None
    except Exception:  # unreadable, no video stream: ingest skips it with the reason
        return None


def _seek(container: Any, seconds: float) -> Any:
    """Put ``container`` at the keyframe at or before ``seconds`` (a container that cannot
    seek is opened again, read from its start)."""
    if seconds <= 0:
        return container
    stream = container.streams.video[0]
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    try:
        container.seek(int((seconds + start) / stream.time_base), stream=stream, backward=True)
        return container
    except Exception:  # FFmpeg cannot seek this one: decode from the start instead
        name = container.name
        container.close()
        return open_video(name)


FORWARD_SECONDS = 2.0  # decode on rather than seek when the next frame is at most this far on


@dataclass
class _Reader:
    """One open video and where its decoding stands: labelled frames of one video asked for
    in time order (as ingest's sorted chunks ask) decode forward instead of seeking each time,
    so labelling every frame costs one pass, not one keyframe interval per frame."""

    key: tuple  # (process, path, inode, size, mtime, caps): a changed file or a fork reopens
    container: Any
    head: Header
    frames: Iterator[tuple[float, Any]] | None = None  # None: not positioned yet
    behind: tuple[float, Any] | None = None  # the last frame consumed
    ahead: tuple[float, Any] | None = None  # the first frame past the last request, not consumed
    keyframe_gap: float = 0.0  # seconds between two keyframes, once seen
    counted: int | None = None  # the number of ``ahead`` from the stream's start; None: sought

    def forward_to(self, at: float, period: float) -> bool:
        """Whether decoding on from here reaches ``at`` sooner than a seek would."""
        if self.frames is None:
            return False
        here = self.ahead[0] if self.ahead else self.behind[0] if self.behind else 0.0
        return 0 <= at - here <= max(FORWARD_SECONDS, self.keyframe_gap) + period


_OPEN: list[_Reader] = []  # at most one per process: the video read last
_LOCK = threading.Lock()  # one thread at a time uses it


def _reader(source: str | os.PathLike[str], video: VideoOptions, max_pixels: int) -> _Reader:
    """This process's open reader of ``source`` (the file unchanged), else a new one (the
    previous one closed; one inherited from a parent process is left alone)."""
    _regular(source)  # missing, unreadable, not a regular file: BadVideo with the reason
    info = os.stat(source)
    # the caps are part of the key: a reader opened under laxer ones is not reused
    key = (os.getpid(), os.fspath(source), info.st_ino, info.st_size, info.st_mtime_ns,
           max_pixels, video.max_seconds)  # fmt: skip
    if _OPEN and _OPEN[0].key == key:
        return _OPEN[0]
    if _OPEN and (old := _OPEN.pop()).key[0] == os.getpid():
        old.container.close()
    container = open_video(source)
    try:
        head = header(container, video, max_pixels)
    except BaseException:
        container.close()
        raise
    _OPEN.append(_Reader(key, container, head))
    return _OPEN[0]


def _close() -> None:
    """Close this process's reader (after an error, or for another video)."""
    while _OPEN:
        _OPEN.pop().container.close()


def _go_to(reader: _Reader, at: float, period: float, video: VideoOptions, max_pixels: int) -> None:
    """Position ``reader`` to decode forward to ``at``: on from where it is when that is near,
    else reopened and sought to the keyframe before ``at``."""
    if reader.forward_to(at, period):
        return
    if reader.frames is not None:  # a stream that has decoded is reopened, not sought back
        name = reader.container.name
        reader.container.close()
        reader.container = open_video(name)
    reader.container = _seek(reader.container, at - period)
    every = replace(video, fps=None, start=0.0, end=None, max_frames=2**62)
    reader.frames = stream_frames(reader.container, every, max_pixels)
    reader.behind = reader.ahead = None
    reader.counted = -1 if at - period <= 0 else None  # from the start: frames are counted


def _nth(reader: _Reader, n: int, video: VideoOptions, max_pixels: int) -> tuple[float, Any] | None:
    """Frame ``n`` counted from the stream's start, as CVAT and FFmpeg number frames (None past
    the end). Counted, not ``n / rate``: on a variable-rate stream (phones, screen captures)
    that time is another frame, and its boxes would be drawn on the wrong picture. Decodes on
    from the last counted frame, else from the start (a seek loses the count)."""
    if reader.counted is None or reader.counted > n or reader.frames is None:
        _go_to(reader, -1.0, 0.0, video, max_pixels)  # forward_to(-1) is False: from the start
    assert reader.frames is not None and reader.counted is not None
    while reader.counted < n:
        found = next(reader.frames, None)
        if found is None:
            return None
        reader.behind, reader.ahead, reader.counted = reader.ahead, found, reader.counted + 1
    return reader.ahead


def _nearest(reader: _Reader, at: float, period: float) -> tuple[float, Any] | None:
    """Decode on to the first frame past ``at``; the nearer of it and the frame before, where
    within a frame of ``at``: the stated rate's period, or the gap between those two frames
    where longer (a variable-rate stream's stall, a stream without a rate: a frame is shown
    until the next one)."""
    assert reader.frames is not None
    while reader.ahead is None or reader.ahead[0] <= at + TIME_SLACK:
        if reader.ahead is not None:
            reader.behind = reader.ahead
        found = next(reader.frames, None)
        if found is None:
            break
        if reader.counted is not None:
            reader.counted += 1
        if found[1].key_frame and reader.behind is not None and not reader.keyframe_gap:
            reader.keyframe_gap = found[0] - reader.behind[0]
        reader.ahead = found
    behind, ahead, within = reader.behind, reader.ahead, period
    if behind is not None and ahead is not None and behind[0] <= at < ahead[0]:
        within = max(period, ahead[0] - behind[0])
    near = [f for f in (behind, ahead) if f and abs(f[0] - at) <= within + TIME_SLACK]
    return min(near, key=lambda f: abs(f[0] - at), default=None)


def read_frame(
    source: str | os.PathLike[str],
    ref: FrameRef,
    video: VideoOptions,
    max_pixels: int,
    max_bytes: int,
    draft: Callable[[int, int], tuple[int, int]] | None = None,
    gray: bool = False,
) -> tuple[np.ndarray, float]:
    """(the frame nearest the time ``ref`` names, its time), scaled to ``draft(width,
    height)``; ``BadVideo`` where the video has no frame within one frame of it (past its
    end) or no frame ``#frame=`` counts to, or the hostile cases ``read_video`` refuses."""
    with _LOCK:
        return _read_frame(source, ref, video, max_pixels, max_bytes, draft, gray)


def _read_frame(
    source: str | os.PathLike[str],
    ref: FrameRef,
    video: VideoOptions,
    max_pixels: int,
    max_bytes: int,
    draft: Callable[[int, int], tuple[int, int]] | None,
    gray: bool,
) -> tuple[np.ndarray, float]:
    try:
        reader = _reader(source, video, max_pixels)
        head = reader.head
        size = draft(head.width, head.height) if draft else None
        if 4 * math.prod(size or (head.width, head.height)) > max_bytes:
            raise BadVideo(f"memory guard: one frame needs more than {max_bytes:,} bytes")
        period = 1 / head.fps if head.fps else DEFAULT_PERIOD
        at = ref.index * period if ref.index is not None else float(ref.seconds or 0.0)
        if at > video.max_seconds and (ref.index is None or head.fps):
            raise BadVideo(f"{at:.3f} s is past data.video.max_seconds {video.max_seconds:g}")
        if ref.index is not None:
            best = _nth(reader, ref.index, video, max_pixels)
        else:
            _go_to(reader, at, period, video, max_pixels)
            best = _nearest(reader, at, period)
    except BaseException:
        _close()  # a reader that failed is not used again
        raise
    if best is None and ref.index is not None:
        raise BadVideo(
            f"no frame {ref.index}: the stream ends after {(reader.counted or 0) + 1} frames"
        )
    if best is None:
        end = f" (it declares {head.seconds:.3f} s)" if head.seconds is not None else ""
        raise BadVideo(f"no frame within {period:.3f} s of {at:.3f} s{end}")
    return _scaled(best[1], size, gray), round(best[0], 6)
