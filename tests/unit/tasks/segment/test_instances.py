"""Instance segmentation (issue 25, Mask R-CNN as an option of task: segment): instance-id maps
through every resize mode and augmentation (the semantic label map is their image under the
class table, exactly), COCO objects into shards and back as boxes, classes and masks, the
spec's limits, and mask AP against pycocotools by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.unit.tasks.segment.test_segment_data import GEOMETRY, MODES, _coco, _data, _records
from xvhpc.data.transforms import augment, replay_geometry, resize
from xvhpc.tasks.segment.info import IGNORE
from xvhpc.tasks.segment.instances import class_map, coco_instances, instance_targets, paint


def _instances(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An id map of 1..6 ellipses and rectangles (some overlapping: a later one on top), a
    crowd patch (255) one time in three, and its class table (classes 1..3)."""
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    n = int(rng.integers(1, 7))
    for v in range(1, n + 1):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1 + 2, y1 + 2], fill=v)
    if rng.random() < 0.33:
        draw.rectangle([0, 0, width // 5, height // 5], fill=IGNORE)
    table = np.zeros(256, np.uint8)
    table[1 : n + 1] = rng.integers(1, 4, n)
    table[IGNORE] = IGNORE
    return np.asarray(image), table


def _check_objects(ids: np.ndarray, table: np.ndarray, source_ids: set[int]) -> None:
    """Every object of a moved id map is one of its source's, with its class, inside its box."""
    found = instance_targets(ids, table)
    present = {int(v) for v in np.unique(ids)} - {0, IGNORE}
    assert present <= source_ids
    assert len(found["labels"]) == len(present) and (found["labels"] >= 1).all()
    for box, label, mask in zip(found["boxes"], found["labels"], found["masks"], strict=True):
        ys, xs = np.nonzero(mask)
        assert len(xs) and box[0] <= xs.min() and xs.max() < box[2]
        assert box[1] <= ys.min() and ys.max() < box[3]
        assert box[2] - box[0] >= 1 and box[3] - box[1] >= 1
        assert table[ids[ys[0], xs[0]]] == label


@pytest.mark.parametrize("mode", MODES)
def test_instance_maps_follow_every_resize_mode(mode: str) -> None:
    """Random sizes, grids and seeds: a resized id map holds only its ids (and 255 for
    padding), and mapping it through its class table gives exactly the resized label map, so
    semantic and instance runs see one geometry; objects a crop or tile cut away vanish."""
    vanished = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        height, width = (int(v) for v in rng.integers(9, 120, 2))
        size, grid = int(rng.choice([8, 16, 32, 48])), int(rng.integers(1, 4))
        ids, table = _instances(height, width, rng)
        source = {int(v) for v in np.unique(ids)} - {0, IGNORE}
        moved = resize(ids[:, :, None], size, mode, grid, nearest=True, fill=IGNORE)
        labels = resize(class_map(ids, table)[:, :, None], size, mode, grid, nearest=True,
                        fill=IGNORE)  # fmt: skip
        for small, small_labels in zip(moved, labels, strict=True):
            assert set(np.unique(small)) <= source | {0, IGNORE}
            assert np.array_equal(class_map(small[:, :, 0], table), small_labels[:, :, 0])
            _check_objects(small[:, :, 0], table, source)
            vanished += len(source - set(np.unique(small).tolist()))
    if mode in ("center_crop", "tile"):
        assert vanished  # objects a crop or a tile leaves out: gone, not kept empty


def test_instance_maps_follow_every_augmentation() -> None:
    """Flips and exact and inexact rotations replayed on the id map (nearest-neighbour, 255
    where a rotation brings in pixels from outside) commute with the class table."""
    for seed in range(30):
        rng = np.random.default_rng(seed)
        size = int(rng.choice([16, 31, 48]))
        ids, table = _instances(size, size, rng)
        source = {int(v) for v in np.unique(ids)} - {0, IGNORE}
        _, ops = augment(np.zeros((size, size, 1), np.uint8), GEOMETRY, rng)
        moved = replay_geometry(ids[:, :, None], ops, IGNORE)[:, :, 0]
        labels = replay_geometry(class_map(ids, table)[:, :, None], ops, IGNORE)[:, :, 0]
        assert np.array_equal(class_map(moved, table), labels), ops
        _check_objects(moved, table, source)
        if not any(op.startswith("rotate") and int(op[6:]) % 90 for op in ops):
            assert sorted(np.unique(moved)) == sorted(np.unique(ids))  # exact: all kept


def test_coco_objects_become_an_id_map_a_table_and_targets(tmp_path: Path) -> None:
    """The COCO fixture: a polygon (a), an RLE (b) and a crowd: ids 1, 2 and 255; the table
    maps them to the classes; the label map is the semantic one; painting is by score."""
    path = _coco(tmp_path)
    data = _data(path, resize="squash", image_size=40)
    catalog, records = _records(path, data)
    first = next(r for r in records if r.source == "im/0.png")
    assert first.table[1] == 1 and first.table[2] == 2 and first.table[IGNORE] == IGNORE
    assert first.target.shape == (40, 40)
    found = instance_targets(first.target, first.table)
    assert found["labels"].tolist() == [1, 2]
    x0, y0, x1, y1 = found["boxes"][1]  # the RLE block: x 30..39, y 20..29 of 30 rows
    assert (x0, x1, y1) == (30, 40, 40) and 26 <= y0 <= 27  # rows squashed 30 → 40
    ids, table, note = coco_instances(30, 40, ((1, "[[0,0,9,0,9,9,0,9]]", False),) * 300)
    assert "more than 254" in note and set(np.unique(ids)) == {0, 1} and table[1] == 1
    masks = np.zeros((2, 4, 4), np.float32)
    masks[0, :2], masks[1, 1:3] = 0.9, 0.8
    painted = paint(masks, np.array([1, 2]), np.array([0.6, 0.9]), (4, 4))
    assert painted[:, 0].tolist() == [1, 2, 2, 0]  # the surer object on top
    assert not paint(masks, np.array([1, 2]), np.array([0.4, 0.3]), (4, 4)).any()


def test_shards_keep_instance_tables_and_the_dataset_gives_both_views(tmp_path: Path) -> None:
    """A COCO shard stores id maps in ``masks`` and ``instance_classes``; the dataset's label
    maps equal the semantic ones, its objects come from the ids; a shard of folder label maps
    refuses instances with the reason."""
    import h5py

    from xvhpc.data.dataset import Index
    from xvhpc.tasks.segment.dataset import NO_INSTANCES, SegmentationDataset
    from xvhpc.tasks.segment.ingest import SegmentationShardWriter, coco_mask

    path = _coco(tmp_path)
    _, records = _records(path, _data(path, resize="squash", image_size=40))
    shard = tmp_path / "shard.h5"
    writer = SegmentationShardWriter(shard, 40, 1, "none", batch=1)
    for record in records:
        writer.add(record)
    writer.close({"classes": "[]"})
    with h5py.File(shard) as h5:
        assert h5["instance_classes"].shape == (len(records), 256)
    n = len(records)
    index = Index((str(shard),), np.zeros(n, np.int32), np.arange(n), np.zeros(n, np.int64))
    for cache in (False, True):
        dataset = SegmentationDataset(index, cache_in_memory=cache)
        first = next(i for i, r in enumerate(records) if r.source == "im/0.png")
        semantic = class_map(records[first].target, records[first].table)
        assert np.array_equal(dataset[first][1].numpy(), semantic)
        want = coco_mask(30, 40, ((1, "[[10,10,20,10,20,20,10,20]]", False),))
        assert want[12:19, 12:19].all()
        image, target = dataset.use_instances()[first]
        assert target["labels"].tolist() == [1, 2] and target["masks"].shape == (2, 40, 40)
        images, targets = dataset.collate([dataset[0], dataset[1]])
        assert images.shape[0] == 2 and isinstance(targets, list)
    folders = tmp_path / "plain.h5"
    writer = SegmentationShardWriter(folders, 8, 1, "none")
    from xvhpc.data.shards import Record

    writer.add(
        Record(np.zeros((8, 8, 1), np.uint8), 0, "train", "a", target=np.zeros((8, 8), np.uint8))
    )
    writer.close({})
    plain = SegmentationDataset(Index((str(folders),), np.zeros(1, np.int32), np.arange(1),
                                      np.zeros(1, np.int64)))  # fmt: skip
    with pytest.raises(ValueError, match="needs COCO shards"):
        plain.use_instances()
    assert "data.format: coco" in NO_INSTANCES


def _spec(tmp_path: Path, source: str, model: str, extra: str = "") -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: s\ntask: segment\ndata:\n  source: {source}\n{extra}model: {model}\n")
    from xvhpc.spec import SpecError, load_spec

    try:
        load_spec(path)
    except SpecError as exc:
        return str(exc)
    return ""


def test_spec_limits_of_instance_segmentation(tmp_path: Path) -> None:
    """Mask R-CNN archs mean instance mode: COCO only, coco|none weights; file:line:key."""
    coco = str(tmp_path / "a.json")
    assert _spec(tmp_path, coco, "{arch: maskrcnn_tiny, pretrained: none}") == ""
    assert _spec(tmp_path, coco, "{arch: maskrcnn_resnet50_fpn_v2, pretrained: coco}") == ""
    text = _spec(tmp_path, str(tmp_path), "{arch: maskrcnn_tiny, pretrained: none}")
    assert "spec.yaml:4: data.source: maskrcnn_tiny segments instances" in text
    text = _spec(tmp_path, coco, "{arch: maskrcnn_tiny, pretrained: none}", "  format: folders\n")
    assert "spec.yaml:5: data.format: maskrcnn_tiny segments instances" in text
    assert "coco" in text.split("data.format")[1]
    text = _spec(tmp_path, coco, "{arch: maskrcnn_resnet50_fpn, pretrained: imagenet}")
    assert "model.pretrained: maskrcnn_resnet50_fpn is a Mask R-CNN" in text and "coco" in text
    text = _spec(tmp_path, coco, "{arch: unet_resnet18, pretrained: coco}")
    assert "model.pretrained: unet_resnet18 is a semantic segmenter" in text
    text = _spec(tmp_path, coco, "{arch: maskrcnn_tiny, pretrained: coco}")
    assert "maskrcnn_tiny has no pretrained weights" in text
    weighted = "{arch: maskrcnn_tiny, pretrained: none}\ntrain: {class_weights: auto}\n"
    assert "train.class_weights: not supported by Mask R-CNN" in _spec(tmp_path, coco, weighted)


def test_mask_ap_matches_pycocotools_and_carries_intervals() -> None:
    """Perfect objects give AP 1; a missed object and a wrong-class one lower the class's AP
    to pycocotools' own figure; the interval brackets the value."""
    from xvhpc.tasks.segment.maskap import found_annotations, mask_ap, truth_annotations

    rng = np.random.default_rng(0)
    truth, perfect, flawed = [], [], []
    for i in range(12):
        ids, table = _instances(32, 32, rng)
        truth.append(truth_annotations(i, ids, table, 4))
        t = instance_targets(ids, table)
        scores = np.linspace(0.9, 0.6, len(t["labels"]))
        perfect.append(found_annotations(i, t["masks"].astype(np.float32), t["labels"], scores))
        labels = t["labels"].copy()
        if i % 3 == 0:
            labels[0] = labels[0] % 3 + 1
        flawed.append(found_annotations(i, t["masks"][1:] if i % 4 == 1 else t["masks"],
                                        labels[1:] if i % 4 == 1 else labels,
                                        scores[1:] if i % 4 == 1 else scores))  # fmt: skip
    classes = ["background", "a", "b", "c"]
    best = mask_ap(truth, perfect, classes, resamples=200)
    assert best["mask_map"]["value"] == pytest.approx(1.0) and best["mask_map50"]["value"] == 1.0
    worse = mask_ap(truth, flawed, classes, resamples=200)
    assert worse["mask_map50"]["value"] < 0.95
    m = worse["mask_map50"]
    assert m["ci_low"] <= m["value"] <= m["ci_high"] and m["ci_low"] < m["ci_high"]
    assert set(worse["per_class_mask_ap"]) == {"a", "b", "c"}
    import contextlib
    import io

    from xvhpc.stats.cocoap import run_cocoeval

    flat = [a for image in truth for a in image]
    ev = run_cocoeval(12, classes[1:], flat, [a for f in flawed for a in f], "segm",
                      [(32, 32)] * 12)  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        ev.summarize()
    assert worse["mask_map"]["value"] == pytest.approx(ev.stats[0])  # pycocotools' own AP
    assert worse["mask_map50"]["value"] == pytest.approx(ev.stats[1])
    assert worse["objects"] == sum(1 for image in truth for a in image if not a["iscrowd"])


def _fold(seed: int, images: int, k: int) -> dict:
    """A fold's kept figures for pooling: each image's true objects and found ones (the truth
    moved by a pixel or two, so AP@.5 is 1 and AP@[.5:.95] is below)."""
    from xvhpc.tasks.segment.maskap import found_annotations, truth_annotations

    rng = np.random.default_rng(seed)
    objects = []
    for i in range(images):
        ids = np.zeros((24, 24), np.uint8)
        table = np.zeros(256, np.uint8)
        for n in range(1, 3):
            x, y = rng.integers(0, 14, 2)
            ids[y : y + 8, x : x + 8] = n
            table[n] = 1 + (n % (k - 1))
        t = instance_targets(ids, table)
        moved = np.roll(t["masks"], int(rng.integers(1, 3)), axis=2)
        found = found_annotations(i, moved.astype(np.float32), t["labels"], np.full(2, 0.9))
        objects.append((truth_annotations(i, ids, table, k), found))
    return {"per_image": np.zeros((images, k, k)), "distances": np.zeros((images, k)),
            "paths": [f"f{seed}/{i}.png" for i in range(images)],
            "groups": [f"f{seed}/{i}" for i in range(images)], "objects": objects}  # fmt: skip


def test_pooled_folds_renumber_their_images_for_mask_ap() -> None:
    """Each fold numbers its images from 0: pooled, they are renumbered, so mask AP over the
    folds is the AP of all their images at once (not a mix-up of image 0 of one fold with
    image 0 of another)."""
    from xvhpc.tasks.segment.crossval import merge_found
    from xvhpc.tasks.segment.maskap import mask_ap

    classes = ["background", "a", "b"]
    folds = {0: _fold(1, 3, 3), 1: _fold(2, 2, 3)}
    merged = merge_found(folds, [0, 1])
    ids = [{a["image_id"] for a in truth + made} for truth, made in merged["objects"]]
    assert ids == [{0}, {1}, {2}, {3}, {4}]
    pooled = mask_ap(*map(list, zip(*merged["objects"], strict=True)), classes, resamples=0)
    clash = [pair for f in folds.values() for pair in f["objects"]]  # ids 0..2 and 0..1 again
    mixed = mask_ap(*map(list, zip(*clash, strict=True)), classes, resamples=0)
    assert pooled["objects"] == 10 and pooled["mask_map50"]["value"] == 1.0
    assert pooled["mask_map"]["value"] != mixed["mask_map"]["value"]  # renumbering matters
