"""Hostile and careless inputs to labelled video frames (issue 27 review): group joining that
must not go quadratic, one frame named twice in a mask folder, a mask folder linked out of the
data, typo'd fragments, a frame name on uploaded bytes, a video gone before ingest, a reader
opened under laxer caps, and the catalog's memory and header reads per labelled frame.

Real files throughout: videos written by PyAV (``write_video``), masks and images by PIL."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_spec
from tests.unit.data.test_video import write_video
from xvhpc.data import frames
from xvhpc.data.decode import BadImage, DecodeOptions, decode
from xvhpc.data.frames import frame_order, locate, one_group_per_video, video_size
from xvhpc.data.sample import Sample
from xvhpc.registry import load_task
from xvhpc.spec import load_spec
from xvhpc.tasks.detect.labels import reviews
from xvhpc.tasks.segment.catalog import from_folders


def test_groups_joined_in_descending_order_stay_linear() -> None:
    """20,000 frames of one video, each with its own group value in descending order (a
    patient id column sorted backwards): every link used to lengthen one chain (8,000 frames
    took 22 s, 100,000 about an hour); now well under a second, one group named by its
    smallest name."""
    n = 20_000
    samples = [Sample("/a", f"a.mp4#t={i}.000", "x", f"g{n - i:06d}") for i in range(n)]
    started = time.perf_counter()
    out = one_group_per_video(samples, {s.rel: "a.mp4" for s in samples})
    assert time.perf_counter() - started < 5.0
    assert {s.group for s in out} == {"a.mp4"}


def _mask(path: Path, size: int = 16) -> None:
    values = np.zeros((size, size), np.uint8)
    values[: size // 2] = 1
    Image.fromarray(values).save(path)


def _segment_data(root: Path, size: int = 16) -> Path:
    (root / "images").mkdir(parents=True)
    write_video(root / "images" / "clip.mp4", frames=4, fps=10, size=size, codec="mpeg4")
    (root / "masks" / "clip.mp4").mkdir(parents=True)
    return root


def _folders(tmp_path: Path, root: Path) -> tuple[list[Sample], dict[str, list[str]]]:
    data = load_spec(
        tiny_spec(
            tmp_path / "s.yaml",
            root,
            task="segment",
            model={"arch": "unet_tiny", "pretrained": "none"},
        )
    ).spec.data
    _, samples, skipped, _ = from_folders(root, data, [])
    reasons: dict[str, list[str]] = {}
    for s in skipped:
        reasons.setdefault(s["path"], []).append(s["reason"])
    return samples, reasons


def test_a_mask_folder_names_each_frame_once(tmp_path: Path) -> None:
    """``t=0.1.png`` and ``t=0.100.png`` are one frame: one sample, the other skipped with
    the reason (two samples of one name were two records of one name in the shards)."""
    root = _segment_data(tmp_path / "data")
    for name in ("t=0.1.png", "t=0.100.png", "t=0.200.png"):
        _mask(root / "masks" / "clip.mp4" / name)
    samples, reasons = _folders(tmp_path, root)
    assert sorted(s.rel for s in samples) == ["images/clip.mp4#t=0.100", "images/clip.mp4#t=0.200"]
    assert reasons["images/clip.mp4"] == [
        "masks/clip.mp4/t=0.100.png: names the frame of masks/clip.mp4/t=0.1.png too; keep one"
    ]


def test_a_mask_folder_linked_out_of_the_data_is_not_listed(tmp_path: Path) -> None:
    """``masks/clip.mp4`` a link to a folder elsewhere: with data.follow_links false the
    video is skipped once with the reason; no file of the outside folder is read or named."""
    root = _segment_data(tmp_path / "data")
    (root / "masks" / "clip.mp4").rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for n in range(3):
        _mask(elsewhere / f"t=0.{n}00.png")
    (root / "masks" / "clip.mp4").symlink_to(elsewhere, target_is_directory=True)
    samples, reasons = _folders(tmp_path, root)
    assert samples == []
    assert len(reasons["images/clip.mp4"]) == 1
    assert reasons["images/clip.mp4"][0].startswith("mask folder masks/clip.mp4/: outside")


def test_the_catalog_keeps_mask_values_not_masks(tmp_path: Path) -> None:
    """40 labelled frames of a 1024x1024 video: the catalog's peak traced memory stays near
    one mask (1 MiB), not all 40 held until the end (every labelled frame of a long 1080p
    video would be gigabytes on the login node)."""
    root = _segment_data(tmp_path / "data", size=1024)
    for n in range(40):
        _mask(root / "masks" / "clip.mp4" / f"t={n / 100:.3f}.png", size=1024)
    tracemalloc.start()
    try:
        samples, _ = _folders(tmp_path, root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(samples) == 40
    assert peak < 12 * 2**20, f"{peak:,} bytes"


def test_a_typo_in_a_fragment_says_so(tmp_path: Path) -> None:
    """``#t=1,5``, ``#t=-1``, ``#T=1``, ten digits: the reason names the forms, not "file not
    found"; a real file whose name holds ``#`` is still read as itself."""
    write_video(tmp_path / "clip.mp4", frames=2, codec="mpeg4")
    for fragment in ("t=1,5", "t=-1", "T=1", "t=1234567890", "frame=1.5"):
        found, why = locate(tmp_path, f"clip.mp4#{fragment}", False)
        assert found is None and why == (
            f"#{fragment} names no frame: name one as <video>#t=<seconds> or <video>#frame=<number>"
        )
    Image.new("L", (8, 8)).save(tmp_path / "clip.mp4#1.png", format="PNG")
    found, why = locate(tmp_path, "clip.mp4#1.png", False)
    assert why is None and found is not None and found.video is None


def test_frame_numbers_and_seconds_of_one_video_sort_as_two_forward_runs() -> None:
    names = ["c.mp4#t=5", "c.mp4#frame=30", "c.mp4#t=0.5", "c.mp4#frame=2", "b.png", "c.mp4"]
    assert sorted(names, key=frame_order) == [
        "b.png", "c.mp4", "c.mp4#frame=2", "c.mp4#frame=30", "c.mp4#t=0.5", "c.mp4#t=5"
    ]  # fmt: skip


def test_a_frame_name_on_uploaded_bytes_is_refused(tmp_path: Path) -> None:
    """Serve gets bytes: ``clip.mp4#t=1`` used to decode the whole video (a segmenter then
    answered for frame 0, a detector for every frame); now the reason."""
    data = write_video(tmp_path / "clip.mp4", frames=20, fps=10, codec="mpeg4").read_bytes()
    with pytest.raises(BadImage, match="a named frame .* is read from a video file"):
        decode(data, DecodeOptions(size=32), name="clip.mp4#t=1")


def test_a_video_gone_or_past_the_caps_is_a_reason_not_a_decoder_error(tmp_path: Path) -> None:
    """A video deleted after the catalog: "file not found" (was a raw FileNotFoundError,
    "decoder error" in the manifest). The open reader is not reused under stricter caps: a
    second model with a smaller data.max_image_pixels is refused the same frame."""
    video = write_video(tmp_path / "v.mp4", frames=20, fps=10, codec="mpeg4")
    assert decode(video, DecodeOptions(size=32), name="v.mp4#t=0.5")[0].shape == (32, 32, 3)
    with pytest.raises(BadImage, match="exceed data.max_image_pixels 500"):
        decode(video, DecodeOptions(size=32, max_pixels=500), name="v.mp4#t=0.6")
    gone = write_video(tmp_path / "gone.mp4", frames=2, codec="mpeg4")
    os.unlink(gone)
    with pytest.raises(BadImage, match="^file not found$"):
        decode(gone, DecodeOptions(size=32), name="gone.mp4#t=0")


def test_a_video_s_header_is_read_once_for_all_its_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Boxes are checked against the video's size per labelled frame: 500 frames open the
    container once (an hour-long MP4 parses its whole index per open); a rewritten file anew."""
    video = write_video(tmp_path / "v.mp4", frames=2, size=32, codec="mpeg4")
    opened: list[str] = []
    real = frames.open_video

    def counting(source):
        opened.append(str(source))
        return real(source)

    monkeypatch.setattr(frames, "open_video", counting)
    assert {video_size(video) for _ in range(500)} == {(32, 32)}
    assert len(opened) == 1
    write_video(video, frames=3, size=48, codec="mpeg4")
    assert video_size(video) == (48, 48) and len(opened) == 2


def test_detection_review_tells_videos_by_their_file_not_their_name(tmp_path: Path) -> None:
    """A video named ``a#b.mp4`` is no image to review on; an image named ``clip.mp4#1.png``
    is one (the name's text before its first ``#`` decided both the wrong way)."""
    video = write_video(tmp_path / "a#b.mp4", frames=2, size=32, codec="mpeg4")
    image = tmp_path / "clip.mp4#1.png"
    Image.new("RGB", (20, 10)).save(image, format="PNG")
    box = {"label": "x", "confidence": 0.9, "box": [1, 1, 5, 5]}
    rows = [{"path": "a#b.mp4#t=0.000", "boxes": [box]}, {"path": "clip.mp4#1.png", "boxes": [box]}]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = {"a#b.mp4#t=0.000": str(video), "clip.mp4#1.png": str(image)}
    out, skipped = reviews(predictions, files, ["x"])
    assert skipped == 1 and [(r.rel, r.width, r.height) for r in out] == [
        ("clip.mp4#1.png", 20, 10)
    ]


def _variable_rate(path: Path, times: list[float]) -> Path:
    """A lossless video whose frame i (gray 8 * i) is shown at ``times[i]`` seconds."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width = stream.height = 16
        stream.pix_fmt = "bgr0"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 8 * i, np.uint8), "rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_frame_numbers_count_frames_on_a_variable_rate_video(tmp_path: Path) -> None:
    """10 frames with a stall (0-0.3 s, then 1.0-1.5 s; average rate 6.25): ``#frame=n`` is the
    n-th frame as CVAT counts, forward and back (was the frame nearest n / average rate:
    another frame, or "no frame" inside the video: boxes drawn on another picture)."""
    video = _variable_rate(tmp_path / "v.mkv", [0, 0.1, 0.2, 0.3, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    opts = DecodeOptions(size=16, channels=1)
    for n in [*range(10), 2, 7, 0]:
        assert int(decode(video, opts, name=f"v.mkv#frame={n}")[0].mean()) == 8 * n, n
    assert int(decode(video, opts, name="v.mkv#t=1.0")[0].mean()) == 8 * 4
    with pytest.raises(BadImage, match="^no frame 10: the stream ends after 10 frames$"):
        decode(video, opts, name="v.mkv#frame=10")


def test_a_video_spelled_two_ways_is_one_group(tmp_path: Path) -> None:
    """``./videos/v0.mp4#t=0.1`` and ``videos/v0.mp4#t=0.2`` (or ``videos/../videos/``) are
    frames of one file: one group, one side of the split (they were two groups, and the split
    put one video's frames on both sides)."""
    (tmp_path / "videos").mkdir()
    rows = ["path,label,x0,y0,x1,y1"]
    for v in range(6):
        write_video(tmp_path / "videos" / f"v{v}.mp4", frames=6, fps=10, codec="mpeg4")
        for i, spelling in enumerate(("", "./", "videos/../", "", "./", "")):
            rows.append(f"{spelling}videos/v{v}.mp4#t=0.{i},box,1,1,9,9")
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    spec = tiny_spec(tmp_path / "s.yaml", tmp_path / "boxes.csv", task="detect",
                     model={"arch": "fcos_tiny", "pretrained": "none"})  # fmt: skip
    catalog = load_task("detect").catalog(tmp_path / "boxes.csv", load_spec(spec).spec.data)
    sides: dict[str, set] = {}
    for s in catalog.samples:
        sides.setdefault(s.path, set()).add((s.group, s.split))
    assert len(catalog.samples) == 36 and len(sides) == 6
    assert all(len(side) == 1 for side in sides.values()), sides
    assert {g for side in sides.values() for g, _ in side} == {f"videos/v{v}.mp4" for v in range(6)}


def test_a_segmentation_coco_lists_each_frame_once(tmp_path: Path) -> None:
    """Two COCO images ``v.mp4#t=0.1`` and ``v.mp4#t=0.100`` are one frame: the second is
    skipped with the reason (both were samples of one name: two records of one name)."""
    from xvhpc.tasks.segment.catalog import from_coco

    write_video(tmp_path / "v.mp4", frames=4, fps=10, size=16, codec="mpeg4")
    polygon = [[1, 1, 9, 1, 9, 9, 1, 9]]
    doc = {
        "categories": [{"id": 1, "name": "thing"}],
        "images": [{"id": n, "file_name": name, "width": 16, "height": 16}
                   for n, name in enumerate(["v.mp4#t=0.1", "v.mp4#t=0.100", "v.mp4#t=0.2"])],
        "annotations": [{"id": n, "image_id": n, "category_id": 1, "segmentation": polygon,
                         "bbox": [1, 1, 8, 8], "area": 64, "iscrowd": 0} for n in range(3)],
    }  # fmt: skip
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    spec = tiny_spec(tmp_path / "s.yaml", tmp_path / "coco.json", task="segment",
                     model={"arch": "unet_tiny", "pretrained": "none"})  # fmt: skip
    _, samples, skipped, _ = from_coco(tmp_path / "coco.json", load_spec(spec).spec.data, [])
    assert [s.rel for s in samples] == ["v.mp4#t=0.100", "v.mp4#t=0.200"]
    assert skipped == [
        {
            "path": "v.mp4#t=0.100",
            "reason": "the file or frame of images[0] too; list it once (COCO image id 1)",
        }
    ]


def test_predict_inputs_say_a_fragment_typo(tmp_path: Path) -> None:
    """A predict CSV or COCO naming ``clip.mp4#t=1.5s``: the reason names the forms, with the
    line or image id (it was "file not found")."""
    from xvhpc.plan.predict import list_inputs

    write_video(tmp_path / "clip.mp4", frames=2, codec="mpeg4")
    (tmp_path / "in.csv").write_text("path\nclip.mp4#t=1.5s\nclip.mp4#t=0\n")
    items, skipped = list_inputs(tmp_path / "in.csv", {})
    assert [i["rel"] for i in items] == ["clip.mp4#t=0.000"]
    forms = "name one as <video>#t=<seconds> or <video>#frame=<number>"
    assert skipped == [
        {"path": "clip.mp4#t=1.5s", "reason": f"#t=1.5s names no frame: {forms} (CSV line 2)"}
    ]
    coco = {
        "images": [{"id": 7, "file_name": "clip.mp4#T=0"}, {"id": 8, "file_name": "clip.mp4#t=0"}]
    }
    (tmp_path / "in.json").write_text(json.dumps(coco))
    items, skipped = list_inputs(tmp_path / "in.json", {"coco": {"image_dir": "."}})
    assert skipped == [
        {"path": "clip.mp4#T=0", "reason": f"#T=0 names no frame: {forms} (COCO image id 7)"}
    ]


def test_a_time_in_a_variable_rate_stall_is_the_frame_then_shown(tmp_path: Path) -> None:
    """Frames at 0.3 s and 1.0 s (a stall; stated rate 10 fps): ``#t=0.6`` is the frame shown
    then, the one at 0.3 s, and ``#t=0.8`` the one at 1.0 s (both were "no frame within
    0.1 s", though the video shows a frame at every time up to its end)."""
    video = _variable_rate(tmp_path / "v.mkv", [0, 0.1, 0.2, 0.3, 1.0, 1.1])
    opts = DecodeOptions(size=16, channels=1)
    assert int(decode(video, opts, name="v.mkv#t=0.6")[0].mean()) == 8 * 3
    assert int(decode(video, opts, name="v.mkv#t=0.8")[0].mean()) == 8 * 4
    with pytest.raises(BadImage, match="no frame within"):
        decode(video, opts, name="v.mkv#t=5")


def test_a_mask_s_size_is_checked_from_its_header_before_decoding(tmp_path: Path) -> None:
    """A mask whose PNG header says 60000x60000 (a few MB of zeros on disk, 3.6 GB decoded, and
    decode.py lifts PIL's pixel cap) next to a 16x16 video: refused by its header's size, never
    decoded (the reason was "mask cannot be decoded" after trying)."""
    root = _segment_data(tmp_path / "data")
    _mask(root / "masks" / "clip.mp4" / "t=0.100.png")
    png = bytearray((root / "masks" / "clip.mp4" / "t=0.100.png").read_bytes())
    png[16:24] = (60000).to_bytes(4, "big") * 2  # IHDR width, height
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    (root / "masks" / "clip.mp4" / "t=0.000.png").write_bytes(bytes(png))
    samples, reasons = _folders(tmp_path, root)
    assert [s.rel for s in samples] == ["images/clip.mp4#t=0.100"]
    assert reasons["images/clip.mp4"] == [
        "masks/clip.mp4/t=0.000.png is 60000x60000, its video 16x16"
    ]
