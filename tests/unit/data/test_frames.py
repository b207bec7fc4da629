"""Labels that address video frames (issue 27): ``clip.mp4#t=1.500`` / ``#frame=12`` in COCO,
CSV and segmentation mask folders; the nearest frame decoded exactly; a video's frames in one
group; detection and segmentation ingest store each labelled frame with its own boxes / mask.

Videos are written by PyAV in the tests (``write_video``: frame i is gray at 8 * i; the demo
data pans shapes so that a frame's labels are its own)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import tiny_spec
from tests.unit.data.test_video import write_video
from xvhpc.cli import main
from xvhpc.data.decode import BadImage, DecodeOptions, decode
from xvhpc.data.frames import FrameRef, frame_order, frame_ref, locate, one_group_per_video
from xvhpc.data.sample import Sample
from xvhpc.registry import load_task
from xvhpc.spec import load_spec


def test_frame_names_parse_and_normalise() -> None:
    assert frame_ref("a/clip.MP4#t=1.5") == FrameRef("a/clip.MP4", seconds=1.5)
    assert frame_ref("clip.mkv#frame=12") == FrameRef("clip.mkv", index=12)
    assert frame_ref("clip.mp4#t=1.5").name == "clip.mp4#t=1.500"  # as records are named
    for name in ("clip.mp4", "x.png#t=1", "clip.mp4#t=-1", "clip.mp4#t=1e9", "clip.mp4#t=nan",
                 "clip.mp4#frame=1.5", "clip.mp4#t=1#t=2", "clip.mp4#tile0"):  # fmt: skip
        assert frame_ref(name) is None, name


def test_a_listed_name_resolves_to_its_video_or_says_why_not(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.mp4", frames=4, codec="mpeg4")
    found, why = locate(tmp_path, "clip.mp4#t=0.1", follow_links=False)
    assert why is None and found is not None
    assert (found.file, found.shown, found.video) == (
        tmp_path / "clip.mp4",
        "clip.mp4#t=0.100",
        "clip.mp4",
    )
    assert locate(tmp_path, "clip.mp4", False)[1] == (
        "a video: name the labelled frame as <video>#t=<seconds> or <video>#frame=<number>"
    )
    assert locate(tmp_path, "gone.mp4#t=1", False)[1] == "file not found"
    (tmp_path / "sub").mkdir()
    assert "outside the image folder" in str(locate(tmp_path / "sub", "../clip.mp4#t=0", False)[1])


@pytest.mark.parametrize(
    ("name", "codec"),
    [("a.mkv", "ffv1"), ("b.mp4", "mpeg4"), ("c.mp4", "libx264"), ("d.avi", "ffv1")],
)
def test_the_named_frame_is_decoded_exactly(tmp_path: Path, name: str, codec: str) -> None:
    """Frame i of the video is gray 8 * i (mod 256) at i / 10 s: by time, by number, the
    nearest frame to a rounded time, after a seek deep into the stream (x264 keyframes every
    250 frames); a time past the end is refused with the reason."""
    video = write_video(tmp_path / name, frames=300, fps=10, codec=codec)
    opts = DecodeOptions(size=32, channels=1)
    for fragment, index in (("t=0", 0), ("t=1.0", 10), ("t=0.96", 10), ("frame=13", 13),
                            ("t=25.3", 253), ("frame=299", 299)):  # fmt: skip
        frames = decode(video, opts, name=f"{name}#{fragment}")
        assert len(frames) == 1 and frames[0].shape == (32, 32, 1)
        assert abs(float(frames[0].mean()) - (8 * index) % 256) <= 2, (fragment, frames[0].mean())
    with pytest.raises(
        BadImage, match=r"no frame within 0.100 s of 99.000 s \(it declares 30.000 s\)"
    ):
        decode(video, opts, name=f"{name}#t=99")


def test_frames_read_in_any_order_are_the_frames_of_one_whole_decode(tmp_path: Path) -> None:
    """Forward (decoding on, as ingest's time-sorted chunks ask), backward (reopened and
    sought), every frame and every 7th: each named frame is the whole decode's frame at its
    time, pixel for pixel; a video rewritten in place is read anew, not from the open one."""
    video = write_video(tmp_path / "v.mp4", frames=120, fps=10, codec="libx264")
    opts = DecodeOptions(size=32, channels=3)
    whole = decode(video, opts, name="v.mp4")
    assert len(whole) == 120 and whole.times[7] == 0.7
    for order in (range(120), range(119, -1, -1), range(0, 120, 7), [5, 90, 6, 91, 0]):
        for i in order:
            frame = decode(video, opts, name=f"v.mp4#t={whole.times[i]}")[0]
            assert np.array_equal(frame, whole[i]), (list(order)[:3], i)
    write_video(video, frames=120, fps=10, codec="libx264", level=100)  # same path, new pixels
    assert abs(decode(video, opts, name="v.mp4#t=0.1")[0].mean() - 108) <= 2
    assert sorted(["v.mp4#t=10", "v.mp4#t=2", "a.png"], key=frame_order) == [
        "a.png",
        "v.mp4#t=2",
        "v.mp4#t=10",
    ]


def test_a_video_s_frames_are_one_group_and_shared_groups_join() -> None:
    """Frames without a group take their video's; a patient group that two videos share joins
    them, and an image of that patient too: no video (or patient) on both sides of a split."""
    frames = {"a.mp4#t=0.000": "a.mp4", "a.mp4#t=1.000": "a.mp4", "b.mp4#t=0.000": "b.mp4",
              "c.mp4#t=0.000": "c.mp4", "d.mp4#t=0.000": "d.mp4"}  # fmt: skip
    samples = [
        Sample("/a", "a.mp4#t=0.000", "x", "p1"),
        Sample("/a", "a.mp4#t=1.000", "x", None),
        Sample("/b", "b.mp4#t=0.000", "x", "p1"),
        Sample("/c", "c.mp4#t=0.000", "x", None),
        Sample("/d", "d.mp4#t=0.000", "x", "p9"),
        Sample("/i", "img.png", "x", "p9"),
        Sample("/j", "other.png", "x", None),
    ]
    groups = [s.group for s in one_group_per_video(samples, frames)]
    assert groups == ["a.mp4", "a.mp4", "a.mp4", "c.mp4", "d.mp4", "d.mp4", None]


def _demo(task: str, out: Path) -> None:
    args = argparse.Namespace(out=str(out), seed=0, task=task, per_class=3, size=48, video=True)
    assert load_task(task).synth(args) == 0


def _ingest(tmp_path: Path, source: Path, task: str, **data) -> tuple[dict, h5py.File]:
    spec = tiny_spec(tmp_path / "s.yaml", source, task=task, model={"arch": "fcos_tiny" if task == "detect" else "unet_tiny", "pretrained": "none"},
                     data={"shards": 1, "channels": 3, "split": {"validation": 0.34, "seed": 1}, "max_bad_fraction": 0.5, **data})  # fmt: skip
    run = tmp_path / "run"
    assert main(["compile", str(spec), "--out", str(run)]) == 0
    assert main(["ingest", "--run-dir", str(run), "--shard", "all", "--merge"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    return manifest, h5py.File(run / "shards" / "shard-00000.h5")


def _sides(sources: list[str], split: np.ndarray) -> dict[str, set[int]]:
    sides: dict[str, set[int]] = {}
    for source, side in zip(sources, split, strict=True):
        sides.setdefault(source.split("#")[0], set()).add(int(side))
    return sides


def test_detection_ingests_each_labelled_frame_with_its_own_boxes(tmp_path: Path) -> None:
    """COCO over frames (the demo videos pan their shapes, so each frame's boxes differ): every
    stored frame is bright inside its own boxes in the box's colour; a video is one group; a
    whole video, a frame past the end and a CSV of #frame= rows give reasons or the same frames."""
    _demo("detect", tmp_path / "data")
    coco = tmp_path / "data" / "annotations.json"
    doc = json.loads(coco.read_text())
    doc["images"] += [{"id": 900, "file_name": "videos/clip000.mp4", "width": 48, "height": 48},
                      {"id": 901, "file_name": "videos/clip001.mp4#t=60", "width": 48, "height": 48}]  # fmt: skip
    coco.write_text(json.dumps(doc))
    manifest, h5 = _ingest(tmp_path, coco, "detect")
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert skipped["videos/clip000.mp4"].startswith("a video: name the labelled frame as")
    assert "no frame within 0.125 s of 60.000 s" in skipped["videos/clip001.mp4#t=60.000"]
    sources = [s.decode() for s in h5["source"][:]]
    assert len(sources) == 6 * 8 and sources[1] == "videos/clip000.mp4#t=0.250"
    sides = _sides(sources, h5["split"][:])
    assert len(sides) == 6 and all(len(s) == 1 for s in sides.values()), sides
    assert {next(iter(s)) for s in sides.values()} == {0, 1}
    checked = 0
    for k in range(len(sources)):
        start, count = h5["box_start"][k], h5["box_count"][k]
        for (x0, y0, x1, y1), label in zip(h5["boxes"][start : start + count], h5["box_labels"][start : start + count], strict=True):  # fmt: skip
            inside = h5["images"][k][int(y0) + 1 : int(y1) - 1, int(x0) + 1 : int(x1) - 1]
            assert inside[..., label].mean() > 180 and inside[..., 2].mean() < 80, sources[k]
            checked += 1
    assert checked > 20


def test_detection_csv_rows_may_name_frames_by_number(tmp_path: Path) -> None:
    """The same labels as CSV rows of ``#frame=`` numbers (8 fps: frame 2 is t=0.250) give the
    same catalog as COCO's ``#t=`` names, one group per video."""
    _demo("detect", tmp_path / "data")
    doc = json.loads((tmp_path / "data" / "annotations.json").read_text())
    names = {im["id"]: im["file_name"] for im in doc["images"]}
    classes = {c["id"]: c["name"] for c in doc["categories"]}
    with open(tmp_path / "data" / "boxes.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["path", "label", "x0", "y0", "x1", "y1"])
        for im in doc["images"]:
            video, _, t = im["file_name"].partition("#t=")
            out.writerow([f"{video}#frame={round(float(t) * 8)}", "", "", "", "", ""])
        for a in doc["annotations"]:
            video, _, t = names[a["image_id"]].partition("#t=")
            x, y, w, h = a["bbox"]
            out.writerow(
                [
                    f"{video}#frame={round(float(t) * 8)}",
                    classes[a["category_id"]],
                    x,
                    y,
                    x + w,
                    y + h,
                ]
            )
    task = load_task("detect")
    spec = load_spec(tiny_spec(tmp_path / "s.yaml", tmp_path / "data" / "boxes.csv", task="detect", model={"arch": "fcos_tiny", "pretrained": "none"})).spec.data  # fmt: skip
    by_csv = task.catalog(tmp_path / "data" / "boxes.csv", spec)
    by_coco = task.catalog(tmp_path / "data" / "annotations.json", spec)

    def as_time(rel: str) -> str:
        video, _, number = rel.partition("#frame=")
        return f"{video}#t={int(number) / 8:.3f}"

    assert "videos/clip000.mp4#frame=10" in {s.rel for s in by_csv.samples}

    def boxes(catalog, s: Sample) -> tuple:  # class names: CSV numbers classes by name
        return tuple(sorted((*b[:4], catalog.classes[b[4]]) for b in s.target))

    assert {as_time(s.rel): (s.group, boxes(by_csv, s)) for s in by_csv.samples} == {
        s.rel: (s.group, boxes(by_coco, s)) for s in by_coco.samples
    }
    assert all(
        len(side) == 1
        for side in _sides(
            [s.rel for s in by_csv.samples], np.array([s.split == "val" for s in by_csv.samples])
        ).values()
    )
    assert {s.group for s in by_csv.samples} == {f"videos/clip00{n}.mp4" for n in range(6)}


def test_segmentation_ingests_each_frame_with_its_mask(tmp_path: Path) -> None:
    """Folders: ``masks/<video>/t=<seconds>.png`` per labelled frame; the stored mask is the
    frame's own (the chest pans: the device's pixels are the bright ones of that frame); a
    video without masks and a mask with a name that is no time are skipped with reasons."""
    data = tmp_path / "data"
    _demo("segment", data)
    write_video(data / "images" / "unlabelled.mp4", frames=4, codec="mpeg4", size=48)
    (data / "masks" / "clip001.mp4" / "t=0.250.png").rename(
        data / "masks" / "clip001.mp4" / "first.png"
    )
    manifest, h5 = _ingest(tmp_path, data, "segment")
    skipped = {(s["path"], s["reason"]) for s in manifest["skipped"]}
    assert (
        "images/unlabelled.mp4",
        "a video: each labelled frame's mask goes in masks/unlabelled.mp4/t=<seconds>.png",
    ) in skipped
    assert (
        "images/clip001.mp4",
        "masks/clip001.mp4/first.png: not t=<seconds>.png or frame=<number>.png",
    ) in skipped
    sources = [s.decode() for s in h5["source"][:]]
    assert len(sources) == 3 * 8 - 1 and "images/clip000.mp4#t=1.750" in sources
    sides = _sides(sources, h5["split"][:])
    assert len(sides) == 3 and all(len(s) == 1 for s in sides.values()), sides
    for k in range(len(sources)):
        image, mask = h5["images"][k][..., 0], h5["masks"][k]
        if (
            mask == 2
        ).sum() >= 4:  # the device: the brightest thing in the frame, where its mask is
            assert image[mask == 2].mean() > image[mask == 1].mean() + 80, sources[k]
