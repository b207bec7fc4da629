"""Hostile videos (issue 27), as real crafted files at the default caps: huge declared frame
sizes, frames that grow past their header, streams that never end or never declare their
length, timestamps that go backwards or are missing. Each is refused with a reason naming
the cap (``data.max_image_pixels``, ``data.video.max_seconds``) or the frame, quickly and
before a frame is allocated: the peak RSS growth of the refusal is measured.

Nothing huge is ever encoded: a tiny stream is written with PyAV and its header bytes are
patched (AVI's ``avih``/``strf``, MKV's PixelWidth/PixelHeight and SimpleBlock timecodes,
MJPEG's SOF), or packets are muxed with the timestamps a hostile file would carry."""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.conftest import tiny_spec
from xvhpc.data.decode import BadImage, DecodeOptions, VideoOptions, decode

DEFAULTS = DecodeOptions(size=32)  # every cap at its default
PIXELS_CAP = r"data\.max_image_pixels 200,000,000"
MS = Fraction(1, 1000)
BUDGET_MB = 100  # peak RSS growth a refusal may cost (an allocated 16000x16000 frame: ~370)


# ---------------------------------------------------------------- crafting files


class Pipe(io.RawIOBase):
    """A write-only, non-seekable file: a muxer writes to it as to a pipe or a live stream
    (MKV then declares no duration and no cues)."""

    def __init__(self, out: io.BufferedWriter):
        self.out = out

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        return self.out.write(data)


def jpeg(level: int = 100, size: int = 32) -> bytes:
    """One tiny baseline JPEG (an MJPEG packet)."""
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width = enc.height = size
    enc.pix_fmt = "yuvj420p"
    enc.time_base = Fraction(1, 10)
    enc.thread_count = 1  # no encoder threads left in a process ingest then forks
    pixels = np.full((size, size, 3), level, np.uint8)
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuvj420p")
    return bytes(enc.encode(frame)[0])


def grown_jpeg(side: int) -> bytes:
    """A tiny JPEG whose SOF declares ``side`` x ``side``, padded as FFmpeg wants a packet to
    be for that size (it refuses a packet under a 256th of the pixels outright)."""
    data = bytearray(jpeg())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, side, side)  # marker, length, precision, H, W
    return bytes(data) + bytes(min(side * side // 250, 1 << 20))  # past 1 MiB: refused anyway


def mux(
    target: str | Path | Pipe,
    packets: list[tuple[bytes, int]],
    codec: str = "mjpeg",
    size: int = 32,
    pix_fmt: str = "yuvj420p",
    format: str | None = None,
) -> None:
    """A container of ready-made packets at the given timestamps in milliseconds."""
    with av.open(target if isinstance(target, Pipe) else str(target), "w", format=format) as c:
        stream = c.add_stream(codec, rate=1000)
        stream.width = stream.height = size
        stream.pix_fmt = pix_fmt
        stream.time_base = MS
        for data, ms in packets:
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, ms, ms, MS
            c.mux(packet)


def mux_piped(path: Path, packets: list[tuple[bytes, int]], **kw: Any) -> Path:
    """``mux`` through a pipe: no declared duration."""
    with path.open("wb") as out:
        mux(Pipe(out), packets, format="matroska", **kw)
    return path


def encode(
    path: Path, codec: str, pix_fmt: str, size: int = 32, frames: int = 3, rate: int = 10, **kw
) -> Path:
    """A real video from PyAV's encoder (``kw``: the container's format)."""
    with av.open(str(path), "w", **kw) as c:
        stream = c.add_stream(codec, rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = pix_fmt
        for i in range(frames):
            pixels = np.full((size, size, 3), 9 * i % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path


EBML_MASTERS = {
    0x18538067,
    0x1654AE6B,
    0xAE,
    0xE0,
    0x1F43B675,
}  # Segment Tracks Entry Video Cluster


def _vint(data: bytes, pos: int, marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at ``pos``: (value, its length in bytes)."""
    length = 1
    while length <= 8 and not data[pos] & (0x80 >> (length - 1)):
        length += 1
    value = data[pos] if marker else data[pos] & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = value << 8 | byte
    return value, length


def ebml(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int]]:
    """(element id, payload start, payload end) of every element of an MKV, depth first."""
    pos, end = start, len(data) if end is None else end
    while pos < end:
        eid, n = _vint(data, pos, True)
        size, m = _vint(data, pos + n, False)
        stop = min(pos + n + m + size, end)
        yield eid, pos + n + m, stop
        if eid in EBML_MASTERS:
            yield from ebml(data, pos + n + m, stop)
        pos = stop


def mkv_declaring(path: Path, side: int) -> Path:
    """An FFV1 MKV of 256x256 frames whose PixelWidth/PixelHeight say ``side`` x ``side``."""
    data = bytearray(encode(path, "ffv1", "bgr0", size=256).read_bytes())
    fields = [(a, b) for eid, a, b in ebml(data) if eid in (0xB0, 0xBA)]
    assert len(fields) == 2 and all(b - a == 2 for a, b in fields), fields  # 256: two bytes
    for a, b in fields:
        data[a:b] = side.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path


def avi_declaring(path: Path, side: int) -> Path:
    """A raw-video AVI of 32x32 frames whose ``avih`` and ``strf`` say ``side`` x ``side``."""
    data = bytearray(encode(path, "rawvideo", "bgr24").read_bytes())
    avih, strf = data.find(b"avih"), data.find(b"strf")
    assert struct.unpack_from("<II", data, avih + 8 + 32) == (32, 32)  # dwWidth, dwHeight
    assert struct.unpack_from("<ii", data, strf + 8 + 4) == (32, -32)  # biWidth, biHeight
    struct.pack_into("<II", data, avih + 8 + 32, side, side)
    struct.pack_into("<ii", data, strf + 8 + 4, side, side)
    path.write_bytes(bytes(data))
    return path


# ---------------------------------------------------------------- measuring


def _status(key: str) -> int:
    """A /proc/self/status value in MiB (VmRSS: now; VmHWM: the peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no {key} in /proc/self/status")


def refusal(source: Path | bytes, opts: DecodeOptions = DEFAULTS, name: str = "") -> tuple:
    """(the reason ``decode`` refuses ``source`` with, peak RSS growth in MiB, seconds)."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM: the peak of this decode
    base, start = _status("VmRSS"), time.perf_counter()
    with pytest.raises(BadImage) as raised:
        decode(source, opts, name=name)
    return str(raised.value), _status("VmHWM") - base, time.perf_counter() - start


def refused(path: Path, match: str, opts: DecodeOptions = DEFAULTS) -> str:
    """The file and its upload (bytes, as serve's ``/v1/predict`` hands them) are refused for
    ``match``, cheaply; the reason."""
    import re

    for source in (path, path.read_bytes()):
        why, growth, seconds = refusal(source, opts, name=f"upload{path.suffix}")
        assert re.search(match, why), why
        assert growth < BUDGET_MB, f"{path.name}: {growth} MiB for '{why}'"
        assert seconds < 10, f"{path.name}: {seconds:.1f} s for '{why}'"
    return why


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("side", [60000, 15000])
@pytest.mark.parametrize("kind", ["avi-rawvideo", "mkv-ffv1", "avi-mjpeg-sof"])
def test_huge_declared_frames_are_refused_before_a_frame_is_decoded(
    tmp_path: Path, kind: str, side: int
) -> None:
    """60000x60000 is past FFmpeg's own limit (it drops the size as it opens the stream);
    15000x15000 = 225 M pixels is past only data.max_image_pixels (200 M)."""
    if kind == "avi-rawvideo":
        path = avi_declaring(tmp_path / "huge.avi", side)
    elif kind == "mkv-ffv1":
        path = mkv_declaring(tmp_path / "huge.mkv", side)
    else:  # MJPEG carries its size in every frame's SOF: the container says 32x32
        path = tmp_path / "huge.avi"
        mux(path, [(grown_jpeg(side), 100 * k) for k in range(3)])
    if side == 15000:  # FFmpeg's probe decodes the SOF: the header says 15000x15000
        refused(path, rf"^frames of 15000x15000 = 225,000,000 pixels exceed {PIXELS_CAP}$")
    elif kind == "avi-mjpeg-sof":  # past FFmpeg's limit its MJPEG decoder says only "invalid"
        refused(path, r"^video cannot be decoded: InvalidDataError")
    else:  # FFmpeg drops a container's size past its limit as it opens the stream
        refused(
            path, rf"^the video stream declares no frame size, or one past FFmpeg's .*{PIXELS_CAP}"
        )


@pytest.mark.parametrize("suffix", [".avi", ".mkv"])
def test_frames_growing_past_their_header_are_refused_before_allocation(
    tmp_path: Path, suffix: str
) -> None:
    """30 MJPEG frames of 32x32, then one whose SOF says 16000x16000: the header (and
    FFmpeg's probe) see 32x32; the decoder refuses the 31st frame before allocating its
    ~370 MiB (before the fix the refusal came after it was decoded: 370 MiB growth)."""
    path = tmp_path / f"grows{suffix}"
    mux(path, [(jpeg(), 100 * k) for k in range(30)] + [(grown_jpeg(16000), 3000)])
    # either reason names the frame and the cap: the memory the refusal cost tells them apart
    refused(path, rf"^frame 30 (is 16000x16000|cannot be decoded).*{PIXELS_CAP}")
    ok = tmp_path / f"ok{suffix}"
    mux(ok, [(jpeg(), 100 * k) for k in range(30)])  # the same without the grown frame
    assert len(decode(ok, DEFAULTS)) == 30


def test_a_stream_without_a_declared_length_stops_at_max_frames_or_max_seconds(
    tmp_path: Path,
) -> None:
    """A 1 fps MJPEG stream of 3700 s written through a pipe declares no duration: by default
    it stops after max_frames (300) frames; sampled sparsely (one frame in 20 s, 180 < 300 in
    the hour) it is refused at the first frame past data.video.max_seconds, in well under a
    second; the same file written seekable declares its 3700 s and is refused unread."""
    frame = jpeg()
    hour = [(frame, 1000 * k) for k in range(3700)]
    piped = mux_piped(tmp_path / "endless.mkv", hour)
    with av.open(str(piped)) as container:
        assert container.duration is None and container.streams.video[0].duration is None
    frames = decode(piped, DEFAULTS)
    assert len(frames) == 300 and frames.times[-1] == 299.0
    sparse = DecodeOptions(size=32, video=VideoOptions(fps=0.05))
    why = refused(piped, r"frame 3601 at 3601\.0 s: .*data\.video\.max_seconds 3600$", sparse)
    assert "declares" not in why
    seekable = tmp_path / "long.mkv"
    mux(seekable, hour)
    refused(seekable, r"declares 3699\.0 s > data\.video\.max_seconds 3600", sparse)  # last pts
    # MPEG-TS (named .mp4: FFmpeg goes by content) declares no length: FFmpeg reads the last PES
    # timestamps of a seekable file, so the header says its length all the same
    ts = encode(tmp_path / "ts.mp4", "libx264", "yuv420p", 16, 3700, rate=1, format="mpegts")
    refused(ts, r"declares 3700\.0 s > data\.video\.max_seconds 3600")


def test_a_timestamp_gap_past_max_seconds_is_refused_at_that_frame(tmp_path: Path) -> None:
    frame = jpeg()
    gap = [(frame, 0), (frame, 1000), (frame, 2000), (frame, 1_000_000_000)]  # 3 s, 11.6 days
    piped = mux_piped(tmp_path / "gap.mkv", gap)
    refused(piped, r"frame 3 at 1000000\.0 s: the video runs past data\.video\.max_seconds 3600")
    seekable = tmp_path / "gap2.mkv"
    mux(seekable, gap)
    refused(seekable, r"declares 1000000\.0 s > data\.video\.max_seconds 3600")


def test_a_stream_whose_time_stands_still_is_refused_by_its_frame_rate(tmp_path: Path) -> None:
    """200,001 tiny frames all at time 0 (a real file, 2 MB): more than MAX_RATE (1,000)
    frames decoded per second of stream time, so it is refused after about 1,000 of them,
    not after decoding them all; and the one kept frame is kept once, not under one name
    1,000 times."""
    stalled = [(bytes(4), 0)] * 200_001
    path = tmp_path / "stalled.mkv"
    mux(path, stalled, codec="rawvideo", size=2, pix_fmt="gray")
    for fps in (1, None):  # one frame a second (none comes after the first), every frame
        opts = DecodeOptions(size=2, video=VideoOptions(fps=fps))
        why, growth, seconds = refusal(path, opts)
        assert why == (
            "endless stream: 1,000 frames decoded by 0.000 s of stream time (more than 1,000 a "
            "second: time stands still or crawls)"
        ), why
        assert growth < BUDGET_MB and seconds < 2, (growth, seconds)


def test_frames_sharing_a_time_are_kept_once(tmp_path: Path) -> None:
    """Frames at 0, .1, .1, .1, .2 s (a muxer's repeated timestamps): every frame kept is one
    time, three records, never two named ``video#t=0.100``."""
    path = tmp_path / "repeats.mkv"
    mux(path, [(jpeg(20 * k), ms) for k, ms in enumerate((0, 100, 100, 100, 200))])
    frames = decode(path, DecodeOptions(size=32), name="repeats.mkv")
    assert frames.times == [0.0, 0.1, 0.2]
    levels = [float(f.mean()) for f in frames]  # the first frame of each time: 0, 20, 80
    assert all(abs(a - b) <= 4 for a, b in zip(levels, (0, 20, 80), strict=True)), levels


def test_timestamps_going_backwards_are_refused_naming_the_frame(tmp_path: Path) -> None:
    """Five MJPEG frames at 0, .1, .2, .3, .4 s; the fourth's SimpleBlock timecode is patched
    to 50 ms (a muxer refuses to write it): refused at frame 3."""
    path = tmp_path / "backwards.mkv"
    mux(path, [(jpeg(), 100 * k) for k in range(5)])
    data = bytearray(path.read_bytes())
    blocks = [a for eid, a, _ in ebml(data) if eid == 0xA3]  # SimpleBlock: track, int16 time
    assert len(blocks) == 5 and data[blocks[3]] == 0x81, blocks
    assert struct.unpack_from(">h", data, blocks[3] + 1) == (300,)
    struct.pack_into(">h", data, blocks[3] + 1, 50)
    path.write_bytes(bytes(data))
    refused(path, r"bad timestamps: frame 3 at 0\.050 s after 0\.200 s")


def test_frames_without_timestamps_are_refused_naming_the_frame(tmp_path: Path) -> None:
    """A raw H.264 elementary stream (named .mp4: FFmpeg goes by its content) carries no
    timestamps at all."""
    path = encode(tmp_path / "raw.mp4", "libx264", "yuv420p", frames=5, format="h264")
    with av.open(str(path)) as container:
        assert container.format.name == "h264"
    refused(path, r"bad timestamps: frame 0 has no timestamp")


@pytest.mark.timeout(60, method="thread")  # the deadlock below hung until killed
def test_ingest_skips_each_hostile_video_with_its_reason(tmp_path: Path) -> None:
    """Classification over folders of good and hostile videos: the good ones become frames,
    each hostile one is in the manifest's skipped list with the cap it broke.

    First this process scales a frame with PyAV's own per-thread swscale context and its
    default thread pool, as any host of ``decode`` may: ingest's forked workers then hung
    forever reconfiguring the copy they inherited (``video._reformatter`` now makes its own)."""
    from xvhpc.cli import main

    av.VideoFrame(64, 64, "yuv420p").reformat(width=48, height=48, format="rgb24")

    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for v in range(3):
            mux(data / cls / f"good{v}.mkv", [(jpeg(40 + 30 * v), 100 * k) for k in range(4)])
    avi_declaring(data / "a" / "huge.avi", 60000)
    mux(data / "a" / "grows.mkv", [(jpeg(), 0), (grown_jpeg(16000), 100)])
    mux_piped(data / "b" / "gap.mkv", [(jpeg(), 0), (jpeg(), 1000), (jpeg(), 4_000_000)])
    spec = tiny_spec(
        tmp_path / "s.yaml",
        data,
        data={"shards": 1, "max_bad_fraction": 0.5, "split": {"validation": 0.3}},
    )
    run = tmp_path / "run"
    assert main(["compile", str(spec), "--out", str(run)]) == 0
    assert main(["ingest", "--run-dir", str(run), "--shard", "all", "--merge"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"a/huge.avi", "a/grows.mkv", "b/gap.mkv"}, skipped
    assert "data.max_image_pixels 200,000,000" in skipped["a/huge.avi"]
    assert "frame 1 cannot be decoded" in skipped["a/grows.mkv"]
    assert "data.max_image_pixels" in skipped["a/grows.mkv"]
    assert "frame 2 at 4000.0 s" in skipped["b/gap.mkv"]
    assert "data.video.max_seconds 3600" in skipped["b/gap.mkv"]
