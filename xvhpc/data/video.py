"""Videos (MP4/AVI/MOV/MKV) → frames, streamed with PyAV (FFmpeg's binding), defensively.

``data.video`` chooses the frames: every frame, or ``fps`` a second, from ``start`` to ``end``
seconds, at most ``max_frames``. The file is read packet by packet (never whole into memory)
and each kept frame is scaled at once to the size the resize needs (``DecodeOptions.draft_box``),
so a video holds at most ``max_frames`` small frames. A hostile container is refused with a
``BadVideo`` (``decode`` raises it as ``BadImage``) that says why: frames larger than
``data.max_image_pixels`` (in the header; a frame whose bitstream grows past it, as MJPEG's
SOF can, is refused by the decoder before it is allocated: ``max_pixels``), a stream that
runs (or says it runs) past ``data.video.max_seconds`` or decodes more than ``MAX_RATE`` frames
a second of its time (time that stands still), frames without timestamps or with timestamps
that go backwards. ``tests/unit/data/test_video_hostile.py`` crafts each of these as a real
file and checks the refusal at the default caps.

PyAV is imported inside the functions: the login side and the torch-2.0 compat env never
import it. Frame times are seconds from the stream's start; each kept frame's record is named
``<video>#t=<seconds>`` (``records.source_name``), so a record says which video and which time it is.
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


class BadVideo(Exception):
    """A video that cannot become frames; ``str()`` is the reason (``decode`` raises it as
    ``BadImage``, the one error of bad input)."""


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")  # what ``decode`` reads as a video


@dataclass(frozen=True)
class VideoOptions:
    """``data.video``: which frames of a video become images (see ``spec.schema.VideoSpec``)."""

    fps: float | None = None  # None: every frame
    start: float = 0.0
    end: float | None = None
    max_frames: int = 300
    max_seconds: float = 3600.0


# frames a stream may decode per second of its own time (kept or not), counted from its start
# plus one second: past it, time stands still or crawls (an endless stream). 1,000 a second
# admits high-speed cameras, and a legitimate hour at 60 fps (216,000 frames) is never cut.
MAX_RATE = 1000
TIME_SLACK = 1e-6  # seconds: frame times within this are one time
# FFmpeg checks a frame's pixels with its width aligned up to 64 (STRIDE_ALIGN): this slack
# keeps a frame just under data.max_image_pixels decodable; ours is the exact check after it
ALIGN_SLACK = 64 * 65_536
INT_MAX = 2**31 - 1  # the largest max_pixels FFmpeg's decoders take
FFMPEG_MAX_PIXELS = INT_MAX // 8  # av_image_check_size: (width+128)*(height+128) must be below


class Frames(list):
    """A video's kept frames (HxWxC uint8, as ``decode`` gives images) with their times in
    seconds (``times``) and the video's frame size as stored (``size``: width, height)."""

    def __init__(self, frames: list, times: list[float], size: tuple[int, int]):
        super().__init__(frames)
        self.times = times
        self.size = size


@dataclass(frozen=True)
class Header:
    """What a video's container says before any frame is decoded."""

    width: int
    height: int
    fps: float | None  # the stream's average rate, where it says one
    seconds: float | None  # its declared duration, where it says one


def frame_source(rel: str, time: float) -> str:
    """A video frame's record name: the video and its time (a W3C media-fragment, ``#t=``)."""
    return f"{rel}#t={time:.3f}"


def parse_frame_source(source: str) -> tuple[str, float | None]:
    """(the video, the frame's time) of a record name from ``frame_source`` (tiles included);
    (source, None) for a record that is no video frame."""
    video, sep, rest = source.partition("#t=")
    if not sep:
        return source, None
    try:
        return video, float(rest.split("#", 1)[0])
    except ValueError:
        return source, None


def _regular(path: str | os.PathLike[str]) -> None:
    """Refuse a FIFO, a device or a folder before opening it (reading one could never end)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BadVideo("file not found") from None
    except OSError as exc:
        raise BadVideo(f"unreadable: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise BadVideo("not a regular file")
    if os.stat(path).st_size == 0:
        raise BadVideo("zero-byte file")


def open_video(source: str | os.PathLike[str] | bytes) -> Any:
    """The PyAV container of a video file (read lazily from disk) or of uploaded bytes."""
    import av

    if not isinstance(source, bytes):
        _regular(source)
    elif not source:
        raise BadVideo("zero-byte file")
    target: Any = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
    try:
        return av.open(target, mode="r", metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise BadVideo(f"not a readable video (MP4/AVI/MOV/MKV): {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"


def header(container: Any, video: VideoOptions, max_pixels: int) -> Header:
    """The first video stream's size, rate and duration, refused where hostile: no video
    stream, no size, more pixels than ``max_pixels``, a declared duration past the cap."""
    streams = container.streams.video
    if not streams:
        raise BadVideo("the container holds no video stream")
    stream = streams[0]
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width <= 0 or height <= 0:
        # FFmpeg zeroes a size past its own limit (e.g. 60000x60000) as it opens the stream
        raise BadVideo(
            "the video stream declares no frame size, or one past FFmpeg's limit of "
            f"{FFMPEG_MAX_PIXELS:,} pixels (data.max_image_pixels {max_pixels:,})"
        )
    if width * height > max_pixels:
        raise BadVideo(
            f"frames of {width}x{height} = {width * height:,} pixels exceed "
            f"data.max_image_pixels {max_pixels:,}"
        )
    seconds = None
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000
    if seconds is not None and seconds > video.max_seconds:
        raise BadVideo(
            f"the video declares {seconds:.1f} s > data.video.max_seconds {video.max_seconds:g}"
        )
    rate = float(stream.average_rate) if stream.average_rate else None
    return Header(width, height, rate, seconds)


def _frame_time(frame: Any, offset: float, index: int) -> float:
    """A decoded frame's time in seconds from the stream's start; ``BadVideo`` when it has
    none or it is not a finite number."""
    if frame.pts is None or frame.time is None:
        raise BadVideo(f"bad timestamps: frame {index} has no timestamp")
    t = float(frame.time) - offset
    if not math.isfinite(t):
        raise BadVideo(f"bad timestamps: frame {index} has time {t}")
    return t


def stream_frames(
    container: Any, video: VideoOptions, max_pixels: int
) -> Iterator[tuple[float, Any]]:
    """(time, PyAV frame) of each frame ``video`` keeps, decoded one at a time."""
    header(container, video, max_pixels)
    stream = container.streams.video[0]
    stream.thread_type = "NONE"  # ingest forks workers: no FFmpeg threads left behind
    # a codec whose bitstream carries the size (MJPEG's SOF, H.264's SPS) can grow frames past
    # the container's header: the decoder refuses such a frame before allocating it
    stream.codec_context.options = {"max_pixels": str(min(max_pixels + ALIGN_SLACK, INT_MAX))}
    offset = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    kept, last, decoded = 0, -math.inf, 0  # decoded: frames the decoder has given so far
    step = 1 / video.fps if video.fps else 0.0
    next_t = video.start
    try:
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if index >= MAX_RATE * (max(last, 0.0) + 1):
                raise BadVideo(
                    f"endless stream: {index:,} frames decoded by {max(last, 0.0):.3f} s of stream "
                    f"time (more than {MAX_RATE:,} a second: time stands still or crawls)"
                )
            if frame.width * frame.height > max_pixels:
                raise BadVideo(
                    f"frame {index} is {frame.width}x{frame.height}, more pixels than "
                    f"data.max_image_pixels {max_pixels:,}"
                )
            t = _frame_time(frame, offset, index)
            if t < last - TIME_SLACK:
                raise BadVideo(f"bad timestamps: frame {index} at {t:.3f} s after {last:.3f} s")
            last = t
            if t > video.max_seconds:
                raise BadVideo(
                    f"frame {index} at {t:.1f} s: the video runs past data.video.max_seconds "
                    f"{video.max_seconds:g}"
                )
            if video.end is not None and t >= video.end - TIME_SLACK:
                return
            if t < next_t - TIME_SLACK:
                continue
            yield t, frame
            kept += 1
            if kept >= video.max_frames:
                return
            # the next kept time on the fps grid from start (no drift over long videos); every
            # frame: the next later time (a frame at a time kept already would repeat its name)
            next_t = (
                video.start + (math.floor((t - video.start) / step + TIME_SLACK) + 1) * step
                if step
                else t + 2 * TIME_SLACK
            )
    except BadVideo:
        raise
    except Exception as exc:  # FFmpeg on a corrupt packet, PyAV on a broken stream
        if getattr(exc, "errno", None) == errno.EINVAL:  # max_pixels: refused unallocated
            raise BadVideo(
                f"frame {decoded} cannot be decoded: "
                f"its size is invalid or more pixels than data.max_image_pixels "
                f"{max_pixels:,} ({_why(exc)})"
            ) from None
        raise BadVideo(f"video cannot be decoded: {_why(exc)}") from None


_LOCAL = threading.local()  # this thread's (pid, VideoReformatter)
_INHERITED: list[Any] = []  # reformatters a fork left behind: never freed (see _reformatter)


def _reformatter() -> Any:
    """This thread's swscale context, made in this process. ``frame.reformat`` would use
    PyAV's per-thread one, which a forked ingest worker inherits from its parent: if the
    parent ever scaled with swscale's thread pool, reconfiguring (or freeing) that context in
    the child waits forever on threads the fork did not copy."""
    from av.video.reformatter import VideoReformatter

    mine = getattr(_LOCAL, "reformatter", None)
    if mine is None or mine[0] != os.getpid():
        if mine is not None:
            _INHERITED.append(mine)  # freeing it could wait on the parent's threads
        mine = _LOCAL.reformatter = (os.getpid(), VideoReformatter())
    return mine[1]


def _scaled(frame: Any, size: tuple[int, int] | None, gray: bool) -> np.ndarray:
    """One frame as HxWxC uint8 (C: 1 or 3), already at ``size`` (None: as stored)."""
    width, height = size if size else (frame.width, frame.height)
    width, height = min(width, frame.width), min(height, frame.height)
    # one swscale thread: its default thread pool deadlocks ingest's forked workers
    array = (
        _reformatter()
        .reformat(frame, width=width, height=height, format="gray" if gray else "rgb24", threads=1)
        .to_ndarray()
    )
    return array[:, :, None] if array.ndim == 2 else array


def read_video(
    source: str | os.PathLike[str] | bytes,
    video: VideoOptions,
    max_pixels: int,
    max_bytes: int,
    draft: Callable[[int, int], tuple[int, int]] | None = None,
    gray: bool = False,
    name: str = "",
) -> Frames:
    """The frames ``video`` keeps of one video (each scaled to ``draft(width, height)``, None:
    as stored), with their times; ``BadVideo`` with the reason for a corrupt, unsupported or
    hostile file, or one whose kept frames would hold more than ``max_bytes``."""
    container = open_video(source)
    try:
        head = header(container, video, max_pixels)
        size = draft(head.width, head.height) if draft else None
        width, height = size or (head.width, head.height)
        cost = video.max_frames * width * height * 4
        if cost > max_bytes:
            raise BadVideo(
                f"memory guard: {video.max_frames} frames of {name or 'the video'} need about "
                f"{cost:,} bytes > the decode budget {max_bytes:,} bytes "
                "(data.video.max_frames, data.max_decode_bytes)"
            )
        frames, times = [], []
        for t, frame in stream_frames(container, video, max_pixels):
            frames.append(_scaled(frame, size, gray))
            times.append(round(t, 6))
    finally:
        container.close()
    if not frames:
        raise BadVideo(
            f"no frame between {video.start:g} s and "
            f"{'the end' if video.end is None else f'{video.end:g} s'} (data.video)"
        )
    return Frames(frames, times, (head.width, head.height))


def video_options(data: Any) -> VideoOptions:
    """``VideoOptions`` of a spec's ``data.video`` (a ``VideoSpec``)."""
    return VideoOptions(**data.video.model_dump())
