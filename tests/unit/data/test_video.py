"""Videos at ingest (issue 27): frames and their times exact for a known video, ``data.video``
sampling, a video's frames on one side of the split, hostile containers refused with reasons.

Every video here is written by PyAV's encoders in the test (ffv1 is lossless: exact pixels)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import h5py
import numpy as np
import pytest

from tests.conftest import tiny_spec
from xvhpc.data.decode import BadImage, DecodeOptions, VideoOptions, decode
from xvhpc.data.video import parse_frame_source


def write_video(
    path: Path, frames: int = 30, fps: int = 10, size: int = 32, codec: str = "ffv1",
    level: int = 0,
) -> Path:  # fmt: skip
    """A video whose frame i is uniformly gray at ``level + 8 * i`` (``codec``: ffv1 lossless
    in MKV/AVI, mpeg4 or libx264 in MP4/MOV)."""
    pix = {"ffv1": "bgr0", "libx264": "yuv444p"}.get(codec, "yuv420p")
    options = {"qp": "0"} if codec == "libx264" else {}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width = stream.height = size
        stream.pix_fmt = pix
        for i in range(frames):
            pixels = np.full((size, size, 3), (level + 8 * i) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_frames_and_times_are_exact_for_a_known_video(tmp_path: Path) -> None:
    """10 fps for 3 s, lossless: 30 frames at i/10 s, frame i at brightness 8i exactly."""
    frames = decode(write_video(tmp_path / "known.mkv"), DecodeOptions(size=32))
    assert frames.times == [round(i / 10, 6) for i in range(30)]
    assert [int(f.min()) for f in frames] == [8 * i for i in range(30)]
    assert [int(f.max()) for f in frames] == [8 * i for i in range(30)]
    assert frames[0].shape == (32, 32, 3) and frames.size == (32, 32)


@pytest.mark.parametrize(
    "name,codec", [("a.mp4", "mpeg4"), ("b.mov", "libx264"), ("c.avi", "mpeg4")]
)
def test_every_container_gives_the_same_frames_and_times(
    tmp_path: Path, name: str, codec: str
) -> None:
    frames = decode(write_video(tmp_path / name, codec=codec), DecodeOptions(size=32))
    assert frames.times == [round(i / 10, 6) for i in range(30)]
    brightness = np.array([f.mean() for f in frames])  # lossy codecs: the nearest level is i
    assert (np.abs(brightness[:, None] - 8 * np.arange(30)).argmin(1) == np.arange(30)).all()


def test_data_video_samples_fps_window_and_cap(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mkv")
    opts = DecodeOptions(size=32, video=VideoOptions(fps=2, start=0.5, end=2.6))
    frames = decode(path, opts)
    assert frames.times == [0.5, 1.0, 1.5, 2.0, 2.5]  # the fps grid from start, before end
    assert [int(f.mean()) for f in frames] == [40, 80, 120, 160, 200]
    capped = decode(path, DecodeOptions(size=32, video=VideoOptions(max_frames=4)))
    assert capped.times == [0.0, 0.1, 0.2, 0.3]
    with pytest.raises(BadImage, match=r"no frame between 5 s and the end"):
        decode(path, DecodeOptions(size=32, video=VideoOptions(start=5)))


def test_frames_are_scaled_while_streaming(tmp_path: Path) -> None:
    """A kept frame is at once at the size the resize needs: memory is max_frames small frames."""
    path = write_video(tmp_path / "big.mkv", frames=3, size=256)
    frames = decode(path, DecodeOptions(size=32, resize="squash"))
    assert frames[0].shape == (32, 32, 3) and frames.size == (256, 256)
    with pytest.raises(BadImage, match="memory guard"):
        decode(path, DecodeOptions(size=32, stored_pixels=True, max_decode_bytes=1 << 20,
                                   video=VideoOptions(max_frames=10)))  # fmt: skip


def test_hostile_and_broken_videos_are_refused_with_reasons(tmp_path: Path) -> None:
    """Broken files here; hostile ones, crafted, at the default caps: test_video_hostile.py."""
    good = write_video(tmp_path / "good.mp4", codec="mpeg4")
    opts = DecodeOptions(size=32)
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    cases = {
        cut: "not a readable video|cannot be decoded",
        garbage: "not a readable video",
        empty: "zero-byte file",
        tmp_path / "missing.avi": "file not found",
    }
    for path, reason in cases.items():
        with pytest.raises(BadImage, match=reason):
            decode(path, opts)
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(BadImage, match="not a regular file"):
        decode(fifo, opts)  # refused before it is opened: reading it would block forever
    # the caps are the spec's values (the default caps: real crafted files in test_video_hostile)
    with pytest.raises(BadImage, match=r"32x32 = 1,024 pixels exceed data.max_image_pixels 1,000"):
        decode(good, DecodeOptions(size=32, max_pixels=1000))
    with pytest.raises(BadImage, match=r"declares 3.0 s > data.video.max_seconds 2"):
        decode(good, DecodeOptions(size=32, video=VideoOptions(max_seconds=2)))
    assert decode(good.read_bytes(), opts, name="upload.mp4").times[:2] == [0.0, 0.1]
    assert len(decode(good, DecodeOptions(size=32, video=VideoOptions(max_frames=5)))) == 5


def test_video_spec_errors_name_file_line_and_key(tmp_path: Path) -> None:
    from xvhpc.spec import SpecError, load_spec

    spec = tiny_spec(
        tmp_path / "s.yaml", tmp_path, data={"video": {"fps": 2, "start": 3, "end": 1}}
    )
    with pytest.raises(SpecError) as raised:
        load_spec(spec)
    assert "s.yaml" in str(raised.value) and "data.video" in str(raised.value)
    assert "end (1.0) must be after start (3.0)" in str(raised.value)
    spec = tiny_spec(tmp_path / "t.yaml", tmp_path, data={"video": {"fsp": 2}})
    with pytest.raises(SpecError, match=r"t.yaml:\d+: data.video.fsp"):
        load_spec(spec)


def test_ingest_keeps_each_video_on_one_side_with_frame_times(tmp_path: Path) -> None:
    """Classification from folders of videos: a record per kept frame named ``video#t=``, and
    every video's frames in one split (a video is one sample: its frames are one group)."""
    from xvhpc.cli import main

    data = tmp_path / "data"
    for c, cls in enumerate(("dark", "light")):
        (data / cls).mkdir(parents=True)
        for v in range(5):
            write_video(data / cls / f"clip{v}.mp4", frames=6, codec="mpeg4", level=c * 120 + v)
    (data / "dark" / "broken.mp4").write_bytes(b"\x00" * 100)
    spec = tiny_spec(
        tmp_path / "s.yaml",
        data,
        data={
            "shards": 1,
            "max_bad_fraction": 0.5,
            "video": {"fps": 5},
            "split": {"validation": 0.3},
        },
    )
    run = tmp_path / "run"
    assert main(["compile", str(spec), "--out", str(run)]) == 0
    assert main(["ingest", "--run-dir", str(run), "--shard", "all", "--merge"]) == 0
    with h5py.File(run / "shards" / "shard-00000.h5") as h5:
        sources = [s.decode() if isinstance(s, bytes) else s for s in h5["source"][:]]
        split = h5["split"][:]
    sides: dict[str, set[int]] = {}
    times: dict[str, list[float]] = {}
    for source, side in zip(sources, split, strict=True):
        video, t = parse_frame_source(source)
        assert t is not None, source
        sides.setdefault(video, set()).add(int(side))
        times.setdefault(video, []).append(t)
    assert len(sides) == 10 and all(len(s) == 1 for s in sides.values()), sides
    assert {len({*s} & {0}) for s in sides.values()} == {0, 1}  # both splits used
    assert all(sorted(t) == [0.0, 0.2, 0.4] for t in times.values()), times
    manifest = json.loads((run / "manifest.json").read_text())
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert "not a readable video" in skipped["dark/broken.mp4"]
    assert manifest["preprocessing"]["video"]["fps"] == 5
