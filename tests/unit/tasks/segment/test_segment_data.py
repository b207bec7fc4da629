"""Segmentation data (issue 25): masks through every resize mode and augmentation exactly as
their images (nearest-neighbour, no new values, aligned), bad masks skipped with reasons, COCO
polygons / RLE / crowd regions, the shards' ``masks`` and the dataset that reads them, the demo
data and the spec's limits. No hypothesis here: the property tests loop over seeds and sizes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xvhpc.data.records import SampleJob
from xvhpc.data.sample import CatalogError
from xvhpc.data.transforms import augment, replay_geometry, resize
from xvhpc.pipeline.ingest import decode_options, preprocessing
from xvhpc.spec.schema import AugmentSpec, DataSpec
from xvhpc.tasks.segment.catalog import build_segmentation_catalog
from xvhpc.tasks.segment.info import IGNORE
from xvhpc.tasks.segment.ingest import SegmentationShardWriter, process_segmentation
from xvhpc.tasks.segment.synth import CLASSES, make_segmentation_dataset

MODES = ("squash", "letterbox", "center_crop", "tile")
GEOMETRY = AugmentSpec(copies=1, hflip=True, vflip=True, rotate=[0, 90, 180, 270, 30, -45, 17])


def _shapes(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A dark image with bright rectangles and ellipses (HxW uint8, values 0..40 and 215..255)."""
    image = Image.fromarray(rng.integers(0, 40, (height, width), dtype=np.uint8))
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 5))):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1 + 2, y1 + 2], fill=int(rng.integers(215, 256)))
    return np.asarray(image)


def _near_edge(mask: np.ndarray, reach: int) -> np.ndarray:
    """Pixels within ``reach`` (Chebyshev) of a pixel of another value (or of the border)."""
    padded = np.pad(mask, reach, mode="edge")
    out = np.zeros(mask.shape, bool)
    h, w = mask.shape
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            out |= padded[reach + dy : reach + dy + h, reach + dx : reach + dx + w] != mask
    return out


def _aligned(image: np.ndarray, mask: np.ndarray, reach: int = 1) -> None:
    """The mask (1: bright) equals the thresholded image wherever it is not ignored, except
    within ``reach`` pixels of an edge of either (where bilinear and nearest round differently,
    and a shape thinner than the scale step is seen by one and missed by the other)."""
    bright = (image[..., 0] if image.ndim == 3 else image) > 127
    labelled = mask != IGNORE
    edges = _near_edge(mask, reach) | _near_edge(bright.astype(np.uint8), reach)
    wrong = labelled & (bright != (mask == 1)) & ~edges
    assert not wrong.any(), f"{wrong.sum()} pixels disagree away from an edge"
    if labelled.sum() > 50:
        agree = (bright == (mask == 1))[labelled].mean()
        assert agree > 0.8, agree


@pytest.mark.parametrize("mode", MODES)
def test_masks_follow_every_resize_mode_nearest_and_aligned(mode: str) -> None:
    """Random sizes and seeds: a label map keeps only its values (and 255 for padding) and a
    mask drawn from the image's bright pixels stays the thresholded resized image."""
    for seed in range(12):
        rng = np.random.default_rng(seed)
        height, width = (int(v) for v in rng.integers(9, 140, 2))
        size = int(rng.choice([8, 16, 32, 48, 64]))
        grid = int(rng.integers(1, 4))
        image = _shapes(height, width, rng)
        labels = rng.choice(np.array([0, 3, 7, 200], np.uint8), (height, width))
        for label_map in (labels, (image > 127).astype(np.uint8)):
            out = resize(label_map[:, :, None], size, mode, grid, nearest=True, fill=IGNORE)
            for small in out:
                assert small.shape == (size, size, 1) and small.dtype == np.uint8
                assert set(np.unique(small)) <= set(np.unique(label_map)) | {IGNORE}
        images = resize(image[:, :, None], size, mode, grid)
        masks = resize((image > 127).astype(np.uint8)[:, :, None], size, mode, grid,
                       nearest=True, fill=IGNORE)  # fmt: skip
        assert len(images) == len(masks) == (grid * grid if mode == "tile" else 1)
        exact = resize(image[:, :, None], size, mode, grid, nearest=True)
        for small_image, small_mask in zip(exact, masks, strict=True):  # one geometry: equal
            labelled = small_mask != IGNORE
            assert np.array_equal((small_image > 127)[labelled], (small_mask == 1)[labelled])
        for small_image, small_mask in zip(images, masks, strict=True):
            _aligned(small_image[:, :, 0], small_mask[:, :, 0], reach=2)
            if mode != "letterbox":
                assert IGNORE not in small_mask  # only padding is ignored


def test_masks_follow_every_augmentation_nearest_and_aligned() -> None:
    """Flips, exact and inexact rotations: the replayed mask keeps its values (255 where the
    rotation brings in pixels from outside) and matches the augmented image's bright pixels."""
    seen = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        size = int(rng.choice([16, 31, 64]))
        image = _shapes(size, size, rng)
        mask = (image > 127).astype(np.uint8)
        out, ops = augment(image[:, :, None], GEOMETRY, rng)
        seen.update(op for op in ops if op.startswith("rotate") or "flip" in op)
        moved = replay_geometry(mask[:, :, None], ops, IGNORE)[:, :, 0]
        assert moved.shape == mask.shape
        assert set(np.unique(moved)) <= {0, 1, IGNORE}
        _aligned(out[:, :, 0], moved, reach=1)
        if not any(op.startswith("rotate") and int(op[6:]) % 90 for op in ops):
            assert IGNORE not in moved and np.array_equal((out[:, :, 0] > 127), moved == 1)
    assert {"hflip", "vflip", "rotate30", "rotate-45", "rotate90"} <= seen


def test_replay_leaves_photometric_ops_alone() -> None:
    mask = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    assert np.array_equal(replay_geometry(mask, ["blur1.00", "noise5", "contrast1.10"]), mask)


# ----------------------------------------------------------------- ingest (catalog + worker)


def _data(source: Path, **kw) -> DataSpec:
    return DataSpec(**{"source": str(source), "image_size": 32, "channels": 1, **kw})


def _records(source: Path, data: DataSpec):
    catalog = build_segmentation_catalog(source, data)
    opts = decode_options(preprocessing(data))
    out = []
    for sample in catalog.samples:
        label = catalog.classes.index(sample.label)
        records, why = process_segmentation(SampleJob(sample, label, data, opts))
        assert why is None, why
        out.extend(records)
    return catalog, out


@pytest.mark.parametrize("mode", MODES)
def test_ingest_moves_each_mask_with_its_image(tmp_path: Path, mode: str) -> None:
    """Files on disk through catalog and worker, augmented copies included: the record's mask
    is the thresholded record image (the mask was drawn from the image's bright pixels)."""
    rng = np.random.default_rng(7)
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for n in range(6):
        height, width = (int(v) for v in rng.integers(20, 90, 2))
        image = _shapes(height, width, rng)
        Image.fromarray(image).save(tmp_path / "images" / f"i{n}.png")
        Image.fromarray((image > 127).astype(np.uint8)).save(tmp_path / "masks" / f"i{n}.png")
    (tmp_path / "labels.json").write_text('{"0": "dark", "1": "bright"}')
    augment_all = {c: GEOMETRY.model_copy(update={"copies": 2}) for c in ("dark", "bright")}
    data = _data(tmp_path, resize=mode, augment=augment_all, split={"validation": 0.2})
    catalog, records = _records(tmp_path, data)
    assert catalog.classes == ["dark", "bright"] and len(catalog.samples) == 6
    assert any(r.ops for r in records)
    for record in records:
        assert record.target.shape == record.image.shape[:2] == (32, 32)
        assert set(np.unique(record.target)) <= {0, 1, IGNORE}
        _aligned(record.image[:, :, 0], record.target, reach=2)


def _demo(tmp_path: Path, images: int = 6) -> Path:
    return make_segmentation_dataset(tmp_path / "demo", images, 48, seed=3)


def _save(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def test_bad_masks_are_skipped_with_reasons(tmp_path: Path) -> None:
    root = _demo(tmp_path, 9)
    masks = root / "masks"
    (masks / "chest00000.png").unlink()  # missing
    _save(masks / "chest00001.png", np.zeros((10, 10), np.uint8))  # another size
    _save(masks / "chest00002.png", np.full((48, 48), 9, np.uint8))  # no class 9
    (masks / "chest00003.png").write_bytes(b"")  # empty
    (masks / "chest00004.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # undecodable
    _save(masks / "chest00005.png", np.zeros((48, 48, 3), np.uint8))  # RGB, not a label map
    _save(masks / "chest00006.png", np.full((48, 48), IGNORE, np.uint8))  # nothing labelled
    (root / "images" / "notes.txt").write_text("not an image")
    catalog = build_segmentation_catalog(root, _data(root))
    reasons = {s["path"]: s["reason"] for s in catalog.skipped}
    assert "file not found" in reasons["images/chest00000.png"]
    assert "masks/chest00001.png is 10x10, its image 48x48" in reasons["images/chest00001.png"]
    assert "mask value(s) 9 name no class" in reasons["images/chest00002.png"]
    assert "cannot be decoded" in reasons["images/chest00003.png"]
    assert "cannot be decoded" in reasons["images/chest00004.png"]
    assert "not a one-channel label map" in reasons["images/chest00005.png"]
    assert "255 (ignore) everywhere" in reasons["images/chest00006.png"]
    assert "not an image" in reasons["images/notes.txt"]
    assert [s.rel for s in catalog.samples] == ["images/chest00007.png", "images/chest00008.png"]


def test_masks_linked_out_of_the_data_and_hostile_names(tmp_path: Path) -> None:
    """A mask that is a link out of masks/ is never read (data.follow_links: false) and a link
    to a FIFO never blocks; names with quotes, newlines and non-UTF-8 bytes are data, shown
    escaped in the reasons."""
    import os

    root = _demo(tmp_path, 6)
    masks, images = root / "masks", root / "images"
    secret = tmp_path / "secret.png"
    _save(secret, np.zeros((48, 48), np.uint8))
    (masks / "chest00000.png").unlink()
    (masks / "chest00000.png").symlink_to(secret)  # out of the data: refused
    os.mkfifo(tmp_path / "fifo")
    (masks / "chest00001.png").unlink()
    (masks / "chest00001.png").symlink_to(tmp_path / "fifo")
    hostile = 'it\'s "x"\n$(rm -rf ~)'
    (images / "chest00002.png").rename(images / f"{hostile}.png")
    (masks / "chest00002.png").rename(masks / f"{hostile}.png")
    raw = os.fsencode(images) + b"/caf\xe9.png"  # a name that is not UTF-8
    os.rename(images / "chest00003.png", raw)
    catalog = build_segmentation_catalog(root, _data(root, follow_links=False))
    reasons = {s["path"]: s["reason"] for s in catalog.skipped}
    assert "outside" in reasons["images/chest00000.png"], reasons
    assert "images/chest00001.png" in reasons  # the FIFO: a reason, not a hang
    kept = {s.rel for s in catalog.samples}
    assert any("rm -rf" in rel for rel in kept)  # a strange name is still just a name
    assert "file not found" in reasons["images/caf\\xe9.png"]  # escaped; its mask is elsewhere
    assert "images/chest00004.png" in kept and "images/chest00005.png" in kept
    assert all("\n" not in r for r in reasons) and all("\n" not in r for r in kept)


def test_a_mask_that_changed_after_the_catalog_is_skipped_by_the_worker(tmp_path: Path) -> None:
    root = _demo(tmp_path, 4)
    data = _data(root)
    catalog = build_segmentation_catalog(root, data)
    _save(root / "masks" / "chest00000.png", np.zeros((20, 48), np.uint8))
    sample = next(s for s in catalog.samples if s.rel.endswith("chest00000.png"))
    records, why = process_segmentation(
        SampleJob(sample, 0, data, decode_options(preprocessing(data)))
    )
    assert records == [] and why == "mask is 48x20, the decoded image 48x48"


def test_labels_json_names_classes_else_values_do(tmp_path: Path) -> None:
    root = _demo(tmp_path)
    catalog = build_segmentation_catalog(root, _data(root))
    assert catalog.classes == list(CLASSES)
    assert {s.label for s in catalog.samples} <= set(CLASSES)  # the rarest class shown
    same = build_segmentation_catalog(root / "labels.json", _data(root / "labels.json"))
    assert [s.rel for s in same.samples] == [s.rel for s in catalog.samples]
    (root / "labels.json").unlink()
    unnamed = build_segmentation_catalog(root, _data(root))
    assert unnamed.classes == ["class_0", "class_1", "class_2"]
    assert any("no labels.json" in n for n in unnamed.notes)
    (root / "labels.json").write_text('{"0": "a", "2": "b"}')
    with pytest.raises(CatalogError, match="keys must be the mask values 0..K-1"):
        build_segmentation_catalog(root, _data(root))


def test_a_source_without_masks_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(CatalogError, match="no masks/ folder"):
        build_segmentation_catalog(tmp_path, _data(tmp_path))


def _coco(tmp_path: Path) -> Path:
    """Two 40x30 images: a polygon (class a), an uncompressed and a compressed RLE (class b),
    a crowd region, an unknown category and a broken polygon."""
    from pycocotools import mask as coco

    (tmp_path / "im").mkdir()
    for n in range(2):
        _save(tmp_path / "im" / f"{n}.png", np.full((30, 40), 50 * n, np.uint8))
    block = np.zeros((30, 40), np.uint8, order="F")
    block[20:30, 30:40] = 1
    compressed = coco.encode(np.asfortranarray(block))
    compressed["counts"] = compressed["counts"].decode()
    crowd = np.zeros((30, 40), np.uint8)
    crowd[0:5, 0:5] = 1
    flat = crowd.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    doc = {
        "images": [
            {"id": 1, "file_name": "im/0.png", "width": 40, "height": 30, "pid": "p1"},
            {"id": 2, "file_name": "im/1.png", "width": 40, "height": 30, "pid": "p2"},
        ],
        "categories": [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "iscrowd": 0,
             "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]]},
            {"id": 2, "image_id": 1, "category_id": 9, "iscrowd": 0, "segmentation": compressed},
            {"id": 3, "image_id": 1, "category_id": 7, "iscrowd": 1,
             "segmentation": {"counts": counts, "size": [30, 40]}},
            {"id": 4, "image_id": 2, "category_id": 5, "segmentation": [[0, 0, 5, 0, 5, 5]]},
            {"id": 5, "image_id": 2, "category_id": 7, "segmentation": [[0, 0, 5]]},
        ],
    }  # fmt: skip
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_polygons_rle_and_crowd_regions_become_label_maps(tmp_path: Path) -> None:
    path = _coco(tmp_path)
    data = _data(path, resize="squash", image_size=40, coco={"group_field": "pid"})
    catalog = build_segmentation_catalog(path, data)
    assert catalog.classes == ["background", "a", "b"]
    dropped = [d["reason"] for d in catalog.ignored]
    assert any("unknown category_id 5" in r for r in dropped)
    assert any("not a list of at least 3 x,y" in r for r in dropped)
    assert {s.group for s in catalog.samples} == {"p1", "p2"}
    from xvhpc.tasks.segment.ingest import sample_mask

    opts = decode_options(preprocessing(data))
    first = next(s for s in catalog.samples if s.rel == "im/0.png")
    mask = sample_mask(SampleJob(first, 1, data, opts))
    assert mask.shape == (30, 40)
    assert (mask[12:19, 12:19] == 1).all()  # the polygon
    assert (mask[20:30, 30:40] == 2).all()  # the compressed RLE
    assert (mask[0:5, 0:5] == IGNORE).all()  # crowd: ignored
    assert set(np.unique(mask)) == {0, 1, 2, IGNORE}
    second = next(s for s in catalog.samples if s.rel == "im/1.png")
    assert not sample_mask(SampleJob(second, 0, data, opts)).any()  # nothing drawable: background


# ----------------------------------------------------------------- shards and dataset


def test_shards_store_masks_compressed_and_the_dataset_reads_them(tmp_path: Path) -> None:
    import h5py

    from xvhpc.data.dataset import Index
    from xvhpc.tasks.segment.dataset import SegmentationDataset

    root = _demo(tmp_path, 5)
    _, records = _records(root, _data(root, split={"validation": 0.2}))
    path = tmp_path / "shard-00000.h5"
    writer = SegmentationShardWriter(path, 32, 1, "none", batch=2)
    for record in records:
        writer.add(record)
    writer.close({"classes": json.dumps(list(CLASSES))})
    with h5py.File(path) as h5:
        assert h5["masks"].shape == (5, 32, 32) and h5["masks"].dtype == np.uint8
        assert h5["masks"].compression == "gzip"
    n = len(records)
    index = Index((str(path),), np.zeros(n, np.int32), np.arange(n), np.zeros(n, np.int64))
    for cache in (False, True):
        dataset = SegmentationDataset(index, cache_in_memory=cache)
        image, mask = dataset[3]
        assert image.shape == (32, 32, 1) and mask.dtype.is_floating_point is False
        assert np.array_equal(mask.numpy(), records[3].target.astype(np.int64))
        batch = dataset.__getitems__([4, 0, 2])
        images, masks = dataset.collate(batch)
        assert images.shape == (3, 32, 32, 1) and masks.shape == (3, 32, 32)
        assert np.array_equal(masks[0].numpy(), records[4].target)
        assert np.array_equal(images[1].numpy(), records[0].image)


def test_demo_data_is_deterministic_and_masks_match_the_picture(tmp_path: Path) -> None:
    from xvhpc.registry import load_task

    args = argparse.Namespace(out=str(tmp_path / "a"), seed=5, task="segment", per_class=4,
                              size=None)  # fmt: skip
    assert load_task("segment").synth(args) == 0
    make_segmentation_dataset(tmp_path / "b", 4, 64, seed=5)
    for sub in ("images", "masks"):
        for name in sorted(p.name for p in (tmp_path / "a" / sub).iterdir()):
            a = np.asarray(Image.open(tmp_path / "a" / sub / name))
            assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b" / sub / name)))
    labels = json.loads((tmp_path / "a" / "labels.json").read_text())
    assert labels == {"0": "background", "1": "lung", "2": "device"}
    image = np.asarray(Image.open(tmp_path / "a" / "images" / "chest00000.png"), np.float32)
    mask = np.asarray(Image.open(tmp_path / "a" / "masks" / "chest00000.png"))
    assert image.shape == mask.shape == (64, 64)
    assert image[mask == 1].mean() + 20 < image[mask == 0].mean()  # dark lungs
    if (mask == 2).any():
        assert image[mask == 2].mean() > image[mask == 0].mean() + 60  # a bright device


# ----------------------------------------------------------------- spec


def _spec(tmp_path: Path, extra: str, model: str = "{arch: unet_tiny, pretrained: none}") -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: s\ntask: segment\ndata:\n  source: {tmp_path}\n{extra}model: {model}\n")
    from xvhpc.spec import SpecError, load_spec

    try:
        load_spec(path)
    except SpecError as exc:
        return str(exc)
    return ""


def test_spec_limits_of_segment(tmp_path: Path) -> None:
    assert _spec(tmp_path, "  augment: {lung: {copies: 1, rotate: [30, 90]}}\n") == ""
    text = _spec(tmp_path, "  format: csv\n", "{arch: unet_tiny, pretrained: imagenet}")
    assert "spec.yaml:5: data.format: task: segment reads masks from folders" in text
    assert "spec.yaml:6: model.pretrained: unet_tiny has no pretrained weights" in text
    train = "train: {balanced_sampling: true, label_smoothing: 0.1}\n"
    text = _spec(tmp_path, "", "{arch: unet_tiny, pretrained: none}\n" + train)
    assert "train.balanced_sampling: not supported with task: segment" in text
    assert "train.label_smoothing: not supported with task: segment" in text
    assert _spec(tmp_path, "", "{arch: deeplabv3_resnet50, pretrained: imagenet}") == ""
    weighted = "{arch: unet_tiny, pretrained: none}\ntrain: {class_weights: auto}\n"
    assert _spec(tmp_path, "", weighted) == ""  # median-frequency pixel weights


def test_model_mode_semantic_or_instance_agrees_with_the_arch(tmp_path: Path) -> None:
    coco = "  format: coco\n"
    assert _spec(tmp_path, coco, "{arch: maskrcnn_tiny, pretrained: none, mode: instance}") == ""
    assert _spec(tmp_path, "", "{arch: unet_tiny, pretrained: none, mode: semantic}") == ""
    text = _spec(tmp_path, "", "{arch: unet_tiny, pretrained: none, mode: instance}")
    assert (
        "model.arch: unet_tiny gives a class per pixel; instance segmentation is Mask R-CNN" in text
    )
    assert "maskrcnn_tiny" in text  # the valid choices
    text = _spec(tmp_path, coco, "{arch: maskrcnn_tiny, pretrained: none, mode: semantic}")
    assert "model.arch: maskrcnn_tiny segments instances" in text and "unet_tiny" in text
    text = _spec(tmp_path, "", "{arch: unet_tiny, pretrained: none, mode: panoptic}")
    assert "model.mode: 'panoptic': task: segment models" in text and "semantic, instance" in text


def test_other_tasks_have_no_model_mode(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: c\ndata:\n  source: {tmp_path}\nmodel: {{arch: resnet18, mode: x}}\n")
    from xvhpc.spec import SpecError, load_spec

    with pytest.raises(SpecError, match="model.mode: 'x': task: classify has one way of modelling"):
        load_spec(path)


def test_dicom_images_take_png_masks_and_their_size_is_checked_when_decoded(
    tmp_path: Path,
) -> None:
    """A DICOM header gives PIL no size: the worker compares the decoded frame with the mask."""
    from xvhpc.data.synth import write_dicom

    root = _demo(tmp_path, 3)
    for n in range(3):
        png = root / "images" / f"chest{n:05d}.png"
        write_dicom(png.with_suffix(".dcm"), np.asarray(Image.open(png)))
        png.unlink()
    _save(root / "masks" / "chest00002.png", np.zeros((30, 48), np.uint8))
    data = _data(root, split={"validation": 0.3})
    catalog = build_segmentation_catalog(root, data)
    assert len(catalog.samples) == 3 and not catalog.skipped
    opts = decode_options(preprocessing(data))
    results = {s.rel: process_segmentation(SampleJob(s, 0, data, opts)) for s in catalog.samples}
    records, why = results["images/chest00000.dcm"]
    assert why is None and records[0].target.shape == (32, 32)
    assert results["images/chest00002.dcm"] == ([], "mask is 48x30, the decoded image 48x48")
