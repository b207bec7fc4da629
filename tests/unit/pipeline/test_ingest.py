"""Ingest on real files: every format, every kind of bad input, DICOM, splits, augmentation, resume."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA, tiny_spec, xv
from xvhpc.data.decode import BadImage, DecodeOptions, decode
from xvhpc.data.folds import split_samples
from xvhpc.data.sample import Sample
from xvhpc.data.synth import write_dicom
from xvhpc.data.transforms import resize

OPTS = DecodeOptions(size=32, channels=1)


def gradient(w: int = 80, h: int = 60) -> np.ndarray:
    return (np.add.outer(np.arange(h), np.arange(w)) % 256).astype(np.uint8)


def write(path: Path, image: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kw)
    return path


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("L", "JPEG"),
        ("RGB", "JPEG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("I;16", "PNG"),
        ("RGB", "BMP"),
        ("L", "TIFF"),
        ("RGB", "TIFF"),
    ],
)
def test_decodes_every_format_and_mode(tmp_path: Path, mode: str, fmt: str) -> None:
    base = Image.fromarray(gradient())
    image = (
        base.convert(mode)
        if mode != "I;16"
        else Image.fromarray(gradient().astype(np.uint16) * 200)
    )
    path = write(tmp_path / f"x.{fmt.lower()}", image, format=fmt)
    for channels in (1, 3):
        (frame,) = decode(path, DecodeOptions(size=32, channels=channels))
        assert frame.dtype == np.uint8
        assert frame.shape == (60, 80, channels)
        assert frame.std() > 5  # real content, not a blank


def test_16bit_png_keeps_full_range(tmp_path: Path) -> None:
    values = np.linspace(0, 4095, 80 * 60).reshape(60, 80).astype(np.uint16)
    path = write(tmp_path / "x.png", Image.fromarray(values))
    (frame,) = decode(path, OPTS)
    assert frame.min() == 0
    assert frame.max() == 255


def test_exif_orientation_applied(tmp_path: Path) -> None:
    image = Image.fromarray(gradient(80, 40))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = write(tmp_path / "x.jpg", image, format="JPEG", exif=exif)
    (frame,) = decode(path, OPTS)
    assert frame.shape[:2] == (80, 40)


def test_jpeg_decodes_at_reduced_scale(tmp_path: Path) -> None:
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (3000, 2400), dtype=np.uint8))
    path = write(tmp_path / "big.jpg", big, format="JPEG", quality=80)
    (frame,) = decode(path, DecodeOptions(size=224, channels=1))
    assert 224 <= min(frame.shape[:2])
    assert max(frame.shape[:2]) <= 3000 // 4  # DCT scaling, not a full decode


def test_resize_squash_and_center_crop() -> None:
    frame = gradient(100, 50)[:, :, None]
    assert resize(frame, 32, "squash")[0].shape == (32, 32, 1)
    assert resize(frame, 32, "center_crop")[0].shape == (32, 32, 1)


def test_resize_letterbox_pads() -> None:
    letter = resize(gradient(100, 50)[:, :, None], 32, "letterbox")[0]
    assert letter.shape == (32, 32, 1)
    assert letter[0].max() == 0  # padded top
    assert letter[16].max() > 0


def test_resize_tiles() -> None:
    tiles = resize(gradient(100, 50)[:, :, None], 16, "tile", tile_grid=2)
    assert len(tiles) == 4
    assert all(t.shape == (16, 16, 1) for t in tiles)


def make_dicom(
    path: Path,
    photometric: str = "MONOCHROME2",
    frames: int = 1,
    pixels: bool = True,
    window: tuple | None = None,
    rgb: bool = False,
) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Rows, ds.Columns = 40, 50
    ds.PhotometricInterpretation = "RGB" if rgb else photometric
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.BitsAllocated = 8 if rgb else 16
    ds.BitsStored = 8 if rgb else 12
    ds.HighBit = 7 if rgb else 11
    ds.PixelRepresentation = 0
    if rgb:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ramp = np.add.outer(np.arange(40), np.arange(50)) * 40
    if pixels:
        if rgb:
            arr = np.stack([ramp % 256] * 3, axis=-1).astype(np.uint8)
            ds.PixelData = arr.tobytes()
        else:
            arr = np.stack([ramp + 100 * f for f in range(frames)]).astype(np.uint16)
            ds.PixelData = arr.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    (m2,) = decode(make_dicom(tmp_path / "m2.dcm"), OPTS)
    (m1,) = decode(make_dicom(tmp_path / "m1.dcm", "MONOCHROME1"), OPTS)
    assert m2.shape == (40, 50, 1)
    assert np.corrcoef(m1.ravel().astype(float), m2.ravel().astype(float))[0, 1] < -0.99  # inverted


def test_dicom_voi_window_applied(tmp_path: Path) -> None:
    (windowed,) = decode(make_dicom(tmp_path / "w.dcm", window=(500, 200)), OPTS)
    assert windowed.shape == (40, 50, 1)
    assert (windowed == 255).mean() > 0.5  # VOI window saturates


def test_dicom_colour(tmp_path: Path) -> None:
    (rgb,) = decode(make_dicom(tmp_path / "rgb.dcm", rgb=True), DecodeOptions(32, 3))
    assert rgb.shape == (40, 50, 3)


def test_dicom_first_or_all_frames(tmp_path: Path) -> None:
    multi = make_dicom(tmp_path / "multi.dcm", frames=3)
    assert len(decode(multi, OPTS)) == 1
    assert len(decode(multi, DecodeOptions(32, 1, dicom_frames="all"))) == 3


def test_dicom_without_pixel_data_is_a_bad_image(tmp_path: Path) -> None:
    with pytest.raises(BadImage, match="without pixel data"):
        decode(make_dicom(tmp_path / "nopix.dcm", pixels=False), OPTS)


def test_pydicom_test_files_ingested_or_explained(tmp_path: Path) -> None:
    test_files = (
        Path(pydicom.__file__).parent / "data" / "test_files"
    )  # listed directly: no downloads
    files = sorted(p for p in test_files.iterdir() if p.suffix == ".dcm")
    assert len(files) > 30
    data = tmp_path / "data"
    (data / "pydicom").mkdir(parents=True)
    for f in files:
        shutil.copy(f, data / "pydicom" / f.name)
    (data / "other").mkdir()
    write_dicom(data / "other" / "synthetic.dcm", gradient(64, 64))
    spec = tiny_spec(
        tmp_path / "s.yaml",
        data,
        data={"max_bad_fraction": 1.0, "shards": 1, "split": {"validation": 0.01}},
    )
    xv("compile", str(spec), "--out", str(tmp_path / "run"))
    xv("ingest", "--run-dir", str(tmp_path / "run"), "--shard", "all", "--merge")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    with h5py.File(tmp_path / "run" / "shards" / "shard-00000.h5") as h5:
        stored = {s.decode() if isinstance(s, bytes) else s for s in h5["source"][:]}
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    decoder_named = 0
    for f in files:
        rel = f"pydicom/{f.name}"
        assert rel in stored or rel in skipped, f"{rel} neither ingested nor explained"
        try:
            ds = pydicom.dcmread(f)
            single = int(ds.get("NumberOfFrames", 1) or 1) == 1 and ds.pixel_array.size > 0
        except Exception:
            single = False
        if single:  # a single decodable image must be in the shards
            assert rel in stored, f"{rel} is decodable but was skipped: {skipped.get(rel)}"
        elif rel in skipped and "needs an extra decoder" in skipped[rel]:
            assert "pip install" in skipped[rel]
            decoder_named += 1
    assert decoder_named >= 3  # JPEG-LS / JPEG 2000 / JPEG need packages this install lacks


def make_mixed(root: Path) -> dict[str, str]:
    """Good images in two classes plus one of every kind of bad input; returns bad → expected reason."""
    good = Image.fromarray(gradient(64, 48))
    for cls in ("a", "b"):
        for i in range(6):
            write(root / cls / f"{cls}{i}.png", good.rotate(i * 30))
            write(root / cls / f"{cls}{i}.jpg", good.rotate(i * 20), format="JPEG")
    jpeg = io.BytesIO()
    good.save(jpeg, format="JPEG")
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200), dtype=np.uint8)).save(
        png, format="PNG"
    )
    (root / "a" / "zero.jpg").write_bytes(b"")
    (root / "a" / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "a" / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (root / "b" / "random.jpg").write_bytes(np.random.default_rng(2).bytes(5000))
    (root / "b" / "notes.txt").write_text("not an image")
    make_dicom(root / "b" / "nopixels.dcm", pixels=False)
    write(root / "b" / "bomb.png", Image.fromarray(np.zeros((400, 400), np.uint8)))
    os.symlink(root / "does-not-exist.png", root / "a" / "dangling.png")
    (root / "empty_class").mkdir()
    return {
        "a/zero.jpg": "zero-byte",
        "a/truncated.jpg": "truncated",
        "a/truncated.png": "PNG",
        "b/random.jpg": "content does not match",
        "b/notes.txt": "non-image",
        "b/nopixels.dcm": "without pixel data",
        "b/bomb.png": "decompression bomb",
        "a/dangling.png": "unreadable",
    }


def test_mixed_good_and_bad_files(tmp_path: Path) -> None:
    expected = make_mixed(tmp_path / "data")
    spec = tiny_spec(
        tmp_path / "s.yaml",
        tmp_path / "data",
        data={"max_bad_fraction": 0.5, "max_image_pixels": 100_000},
    )
    xv("compile", str(spec), "--out", str(tmp_path / "run"))
    proc = xv("ingest", "--run-dir", str(tmp_path / "run"), "--shard", "all", "--merge")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == set(expected)
    for path, fragment in expected.items():
        assert fragment in skipped[path], (path, skipped[path])
        assert path in proc.stderr  # reported in the log too
    total = sum(s["count"] for s in manifest["shards"])
    assert total == 24  # every good image, nothing else
    assert any("empty_class" in n and "empty" in n for n in manifest["notes"])
    assert manifest["classes"] == ["a", "b"]


def test_too_many_bad_files_is_an_error(tmp_path: Path) -> None:
    make_mixed(tmp_path / "data")
    spec = tiny_spec(
        tmp_path / "s.yaml",
        tmp_path / "data",
        data={"max_bad_fraction": 0.05, "max_image_pixels": 100_000},
    )
    xv("compile", str(spec), "--out", str(tmp_path / "run"))
    proc = xv(
        "ingest", "--run-dir", str(tmp_path / "run"), "--shard", "all", "--merge", check=False
    )
    assert proc.returncode == 3
    assert "above data.max_bad_fraction 5.0%" in proc.stderr
    assert "error" in json.loads((tmp_path / "run" / "manifest.json").read_text())


def test_fewer_than_two_classes(tmp_path: Path) -> None:
    write(tmp_path / "data" / "only" / "x.png", Image.fromarray(gradient()))
    spec = tiny_spec(tmp_path / "s.yaml", tmp_path / "data")
    xv("compile", str(spec), "--out", str(tmp_path / "run"))
    proc = xv(
        "ingest", "--run-dir", str(tmp_path / "run"), "--shard", "all", "--merge", check=False
    )
    assert proc.returncode == 2
    assert "need at least two classes" in proc.stderr
    assert "(only)" in proc.stderr


def test_group_aware_stratified_split_is_seeded() -> None:
    samples = [Sample(f"/p{i}", f"p{i}", "ab"[i % 2], group=f"patient{i // 3}") for i in range(120)]
    first = split_samples(samples, 0.25, seed=7, stratify=True)
    assert first == split_samples(samples, 0.25, seed=7, stratify=True)
    assert first != split_samples(samples, 0.25, seed=8, stratify=True)
    sides: dict[str, set[str]] = {}
    for s in first:
        sides.setdefault(s.group, set()).add(s.split)
    assert all(len(v) == 1 for v in sides.values()), "a patient on both sides of the split"
    val = [s for s in first if s.split == "val"]
    assert 0.15 < len(val) / len(first) < 0.35
    assert {s.label for s in val} == {"a", "b"}


def test_real_chest_xrays_through_csv(tmp_path: Path) -> None:
    csv = SHARED_DATA / "cxr-figure1" / "metadata.csv"
    assert csv.is_file(), "shared chest X-rays missing"
    spec = tiny_spec(
        tmp_path / "s.yaml",
        csv,
        data={
            "image_size": 64,
            "shards": 2,
            "csv": {
                "path_pattern": "images/{patientid}.*",
                "label_column": "finding",
                "group_column": "patientid",
            },
            "augment": {"Pneumonia": {"hflip": True, "copies": 3}},
        },
    )
    xv("compile", str(spec), "--out", str(tmp_path / "run"))
    xv("ingest", "--run-dir", str(tmp_path / "run"), "--shard", "all", "--merge")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["classes"] == ["COVID-19", "No finding", "Pneumonia"]
    assert m["unlabelled"] == 15
    assert not m["skipped"]
    before, after = m["counts_before_augmentation"], m["counts_after_augmentation"]
    assert sum(before["train"].values()) + sum(before["val"].values()) == 40
    assert after["train"]["Pneumonia"] == 4 * before["train"]["Pneumonia"]
    assert after["val"] == before["val"], "augmentation must never touch validation"
    groups: dict[str, set[int]] = {}
    for shard in sorted((tmp_path / "run" / "shards").glob("*.h5")):
        with h5py.File(shard) as h5:
            assert h5["images"].shape[1:] == (64, 64, 1)
            assert h5["images"].chunks == (1, 64, 64, 1)
            for src, split, ops in zip(h5["source"][:], h5["split"][:], h5["ops"][:], strict=True):
                groups.setdefault(src.decode().split("/")[-1].rsplit(".", 1)[0], set()).add(
                    int(split)
                )
                if ops:
                    assert int(split) == 0
                    assert "ops" in json.loads(ops.decode())
    assert all(len(v) == 1 for v in groups.values())


def test_real_chest_xrays_through_coco_json(tmp_path: Path) -> None:
    """The figure-1 X-rays as COCO JSON (one category per image), plus every COCO defect."""
    import csv as csvlib

    root = SHARED_DATA / "cxr-figure1"
    rows = list(csvlib.DictReader((root / "metadata.csv").open(newline="", encoding="latin-1")))
    names = sorted({r["finding"] for r in rows if r["finding"]})
    categories = [{"id": 10 + i, "name": n} for i, n in enumerate(names)]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for i, row in enumerate(rows):
        file = next((root / "images").glob(f"{row['patientid']}.*"), None)
        if file is None:
            continue
        images.append({"id": i, "file_name": f"images/{file.name}", "patient": row["patientid"]})
        if row["finding"]:
            annotations.append({"id": i, "image_id": i, "category_id": cat_id[row["finding"]]})
    labelled = len(annotations)
    first = annotations[0]["image_id"]
    annotations.append({"id": 900, "image_id": first, "category_id": 999})  # unknown category
    annotations.append({"id": 901, "image_id": images[1]["id"], "category_id": 10})
    annotations.append({"id": 902, "image_id": images[1]["id"], "category_id": 11})
    images.append({"id": 950, "file_name": "images/not-there.jpg", "patient": "x"})
    annotations.append({"id": 903, "image_id": 950, "category_id": 10})
    doc = {"images": images, "annotations": annotations, "categories": categories}
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    spec = tiny_spec(
        tmp_path / "s.yaml",
        tmp_path / "coco.json",
        data={
            "image_size": 48,
            "max_bad_fraction": 0.2,
            "coco": {"image_dir": str(root), "group_field": "patient"},
        },
    )
    xv("compile", str(spec), "--out", str(tmp_path / "run"))
    xv("ingest", "--run-dir", str(tmp_path / "run"), "--shard", "all", "--merge")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["classes"] == names
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    file_of = {im["id"]: im["file_name"] for im in images}
    two = images[1]["id"]
    assert "unknown category_id 999" in reasons[file_of[first]]
    assert "several categories" in reasons[file_of[two]]
    assert reasons["images/not-there.jpg"].startswith("file not found")
    labelled_ids = {a["image_id"] for a in annotations[:labelled]}
    assert m["unlabelled"] == len(set(file_of) - labelled_ids - {two, 950})
    stored = sum(s["count"] for s in m["shards"])
    assert stored == len(labelled_ids - {first, two}) > 20
    sides: dict[str, set[int]] = {}
    for shard in sorted((tmp_path / "run" / "shards").glob("*.h5")):
        with h5py.File(shard) as h5:
            for src, split in zip(h5["source"][:], h5["split"][:], strict=True):
                sides.setdefault(src.decode().split("/")[-1].split(".")[0], set()).add(int(split))
    assert len(sides) == stored
    assert all(len(v) == 1 for v in sides.values())
    from xvhpc.data.catalog import build_catalog
    from xvhpc.spec.load import load_spec

    catalog = build_catalog(tmp_path / "coco.json", load_spec(spec).spec.data)
    patient_of = {im["file_name"]: im["patient"] for im in images}
    assert catalog.samples
    assert all(s.group == patient_of[s.rel] for s in catalog.samples)


def test_coco_json_errors_name_the_file(tmp_path: Path) -> None:
    from xvhpc.data.catalog import build_catalog
    from xvhpc.data.sample import CatalogError
    from xvhpc.spec.schema import DataSpec

    bad = tmp_path / "bad.json"
    for text, expected in (
        ("{not json", "not valid JSON"),
        ('{"images": []}', "not COCO JSON"),
        ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "without the field"),
    ):
        bad.write_text(text)
        with pytest.raises(CatalogError, match=expected) as info:
            build_catalog(bad, DataSpec(source=str(bad)))
        assert str(bad) in str(info.value)


def test_leaks_reported_and_dropped(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        for i in range(8):
            write(
                tmp_path / "data" / cls / f"{i}.png",
                Image.fromarray(
                    gradient()
                    if cls == "a"
                    else np.random.default_rng(i).integers(0, 255, (60, 80), dtype=np.uint8)
                ),
            )
    spec = tiny_spec(
        tmp_path / "s.yaml",
        tmp_path / "data",
        data={"leaks": "drop", "split": {"validation": 0.5, "seed": 3}},
    )
    xv("compile", str(spec), "--out", str(tmp_path / "run"))
    xv("ingest", "--run-dir", str(tmp_path / "run"), "--shard", "all", "--merge")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["leaks"]["identical_images_in_train_and_val"] == 1
    assert len(m["exclude_val_hashes"]) == 1
    from xvhpc.data.dataset import load_index

    val = load_index(tmp_path / "run", "val")
    assert m["counts_before_augmentation"]["val"]["a"] > 0  # there were "a" images to drop
    assert (val.labels == 0).sum() == 0  # every identical "a" image dropped from validation
    assert (val.labels == 1).sum() == m["counts_before_augmentation"]["val"]["b"]


def sha256s(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.h5"))}


def _ingest_all(run: Path, workers: int) -> list[str]:
    """`xvhpc ingest` arguments for every shard and the merge."""
    return ["ingest", "--run-dir", str(run), "--shard", "all", "--merge", "--workers", str(workers)]


def test_killed_ingest_resumes_to_identical_shards(tmp_path: Path) -> None:
    from xvhpc.data.synth import make_dataset

    data = make_dataset(tmp_path / "data", per_class=30, size=400, seed=5)
    spec = tiny_spec(
        tmp_path / "s.yaml",
        data,
        data={
            "shards": 3,
            "image_size": 48,
            "augment": {"covid19": {"hflip": True, "noise": 2.0, "copies": 2}},
        },
    )
    for name in ("whole", "killed"):
        xv("compile", str(spec), "--out", str(tmp_path / name))
    xv(*_ingest_all(tmp_path / "whole", 1))
    env = {**os.environ, "XVHPC_PYTHON": sys.executable}
    cmd = [sys.executable, "-m", "xvhpc", *_ingest_all(tmp_path / "killed", 1)]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    shard_dir = tmp_path / "killed" / "shards"
    while (
        not (shard_dir / "shard-00000.json").exists()
        and time.monotonic() < deadline
        and proc.poll() is None
    ):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (shard_dir / "shard-00000.json").exists(), "kill came too early to test a resume"
    assert not (shard_dir / "shard-00002.json").exists(), "kill came too late to test a resume"
    resumed = xv(*_ingest_all(tmp_path / "killed", 2))
    assert "shard 0 already complete" in resumed.stderr
    assert not list(shard_dir.glob(".*.tmp")), "stale temp files left behind"
    assert sha256s(shard_dir) == sha256s(tmp_path / "whole" / "shards")
    m = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert (
        m["counts_after_augmentation"]["train"]["covid19"]
        == 3 * m["counts_before_augmentation"]["train"]["covid19"]
    )


def test_worker_count_does_not_change_the_shards(tmp_path: Path) -> None:
    """1 worker; 3 workers over 4 shards (3 whole shards in parallel, the 4th sample-parallel),
    with fork and with spawn (XVHPC_MP_START_METHOD, for MPI stacks where fork is unsafe)."""
    from xvhpc.data.synth import make_dataset

    data = make_dataset(tmp_path / "data", per_class=12, size=300, seed=2)
    (data / "covid19" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    spec = tiny_spec(
        tmp_path / "s.yaml",
        data,
        data={
            "shards": 4,
            "image_size": 40,
            "max_bad_fraction": 0.5,
            "augment": {"covid19": {"vflip": True, "noise": 3.0, "copies": 1}},
        },
    )
    logs = {}
    for name, workers, method in (
        ("w1", "1", "fork"),
        ("w3", "3", "fork"),
        ("spawn", "3", "spawn"),
    ):
        run = tmp_path / name
        xv("compile", str(spec), "--out", str(run))
        logs[name] = xv(*_ingest_all(run, workers), env={"XVHPC_MP_START_METHOD": method}).stderr
    for name in ("w3", "spawn"):
        assert "ingest 3 shards, 3 at a time" in logs[name]
        assert "shard 3: " in logs[name], "the sample-parallel shard should be logged"
        assert sha256s(tmp_path / "w1" / "shards") == sha256s(tmp_path / name / "shards")
    manifests = [json.loads((tmp_path / w / "manifest.json").read_text()) for w in ("w1", "w3")]
    for manifest in manifests:  # how long ingest took is the one thing that may differ
        assert manifest.pop("ingest_seconds") > 0
    assert manifests[0] == manifests[1]
    assert [s["path"] for s in manifests[0]["skipped"]] == ["covid19/broken.jpg"]


def _square_where(x: int) -> tuple[int, int]:
    time.sleep(0.005)
    return x * x, os.getpid()


def test_ordered_map_keeps_order_and_the_caller_works_while_waiting() -> None:
    from xvhpc.data.pool import sample_mapper

    with sample_mapper(2) as mapper:
        out = list(mapper(_square_where, list(range(60))))
    assert [value for value, _ in out] == [x * x for x in range(60)]
    pids = {pid for _, pid in out}
    assert os.getpid() in pids, "this process should decode while it waits"
    assert len(pids) == 2, "the pool and this process should share work"


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _start_and_kill(tmp_path: Path, kill_parent: bool) -> subprocess.Popen:
    """Compile 'whole' and 'killed' runs, ingest 'whole', start 'killed' with 2 workers and
    SIGKILL its pool workers, or the ingest process itself, once both workers are up."""
    from xvhpc.data.synth import make_dataset

    data = make_dataset(tmp_path / "data", per_class=60, size=800, seed=4)
    spec = tiny_spec(tmp_path / "s.yaml", data, data={"shards": 4, "image_size": 64})
    for name in ("whole", "killed"):
        xv("compile", str(spec), "--out", str(tmp_path / name))
    xv(*_ingest_all(tmp_path / "whole", 2))
    cmd = [sys.executable, "-m", "xvhpc", *_ingest_all(tmp_path / "killed", 2)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    # both pool workers up (a lone child may be a short-lived helper some import forks)
    while len(_children(proc.pid)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.workers = _children(proc.pid)  # type: ignore[attr-defined]
    for pid in [proc.pid] if kill_parent else proc.workers:  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
    return proc


def test_killed_worker_process_is_a_clear_error_and_a_rerun_resumes(tmp_path: Path) -> None:
    """A worker killed mid-ingest (the out-of-memory killer, say): exit 4 naming the cause."""
    proc = _start_and_kill(tmp_path, kill_parent=False)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 4, f"kill came too late or was not reported: {stderr}"
    assert "a worker process died" in stderr
    assert "Traceback" not in stderr
    xv(*_ingest_all(tmp_path / "killed", 2))
    assert sha256s(tmp_path / "killed" / "shards") == sha256s(tmp_path / "whole" / "shards")


def test_killed_ingest_process_leaves_no_orphan_workers(tmp_path: Path) -> None:
    """The ingest process killed: its workers exit too (no orphans writing beside a rerun)."""
    proc = _start_and_kill(tmp_path, kill_parent=True)
    proc.communicate(timeout=60)
    workers = proc.workers  # type: ignore[attr-defined]
    assert len(workers) == 2

    def alive(pid: int) -> bool:
        stat = Path(f"/proc/{pid}/stat")
        return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"

    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), "worker processes outlived the killed ingest"
    xv(*_ingest_all(tmp_path / "killed", 2))
    assert sha256s(tmp_path / "killed" / "shards") == sha256s(tmp_path / "whole" / "shards")


def test_explicit_train_and_val_folders_are_honoured(tmp_path: Path) -> None:
    for split, n in (("train", 5), ("val", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                write(
                    tmp_path / "data" / split / cls / f"{i}.png",
                    Image.fromarray(gradient(40 + i, 30 + len(cls))),
                )
    spec = tiny_spec(tmp_path / "s.yaml", tmp_path / "data")
    xv("compile", str(spec), "--out", str(tmp_path / "run"))
    xv("ingest", "--run-dir", str(tmp_path / "run"), "--shard", "all", "--merge")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["counts_before_augmentation"] == {"train": {"a": 5, "b": 5}, "val": {"a": 2, "b": 2}}
    assert any("explicit train/ and val/" in n for n in m["notes"])


def test_reduced_decode_is_sized_by_the_resize_mode(tmp_path: Path) -> None:
    wide = Image.fromarray(np.random.default_rng(4).integers(0, 255, (1000, 3000), dtype=np.uint8))
    path = write(tmp_path / "wide.jpg", wide, format="JPEG")
    (square,) = decode(path, DecodeOptions(size=224, channels=1, resize="squash"))
    (letter,) = decode(path, DecodeOptions(size=224, channels=1, resize="letterbox"))
    assert min(square.shape[:2]) >= 224  # both sides must reach the target
    assert max(letter.shape[:2]) >= 224
    assert letter.shape[1] < square.shape[1]  # only the long side
    (tiles,) = decode(path, DecodeOptions(size=224, channels=1, resize="tile", tile_grid=2))
    assert min(tiles.shape[:2]) >= 448
