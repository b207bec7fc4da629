"""Object detection (issue 17): boxes through resize and augmentation, ingest, train, serve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import xv
from xvhpc.data.transforms import augment, resize
from xvhpc.spec.schema import AugmentSpec
from xvhpc.tasks.detect.boxes import MIN_VISIBLE, augment_boxes, resize_boxes, unresize_boxes


def _mask(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    image = np.zeros((height, width, 1), np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    return image


def _extent(image: np.ndarray, level: int = 127) -> np.ndarray:
    """The box of the pixels above ``level`` (half-covered pixels count from 128 on)."""
    ys, xs = np.nonzero(image[:, :, 0] > level)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@st.composite
def image_and_box(draw):
    width, height = draw(st.integers(12, 90)), draw(st.integers(12, 90))
    x0, y0 = draw(st.integers(0, width - 4)), draw(st.integers(0, height - 4))
    x1, y1 = draw(st.integers(x0 + 3, width)), draw(st.integers(y0 + 3, height))
    return width, height, (x0, y0, x1, y1)


@settings(max_examples=300, deadline=None)
@given(
    image_and_box(),
    st.sampled_from(["squash", "letterbox", "center_crop", "tile"]),
    st.integers(16, 64),
    st.integers(1, 3),
)
def test_boxes_follow_every_resize_mode(case, mode, size, grid):
    """The box moves where the box's pixels go (to within the one pixel bilinear blurs)."""
    width, height, box = case
    images = resize(_mask(width, height, box), size, mode, grid)
    moved = resize_boxes(np.array([box]), width, height, size, mode, grid)
    assert len(moved) == len(images)
    for tile, (image, (boxes, keep)) in enumerate(zip(images, moved, strict=True)):
        if not len(keep):
            continue
        assert keep.tolist() == [0]
        b = boxes[0]
        back = unresize_boxes(boxes, width, height, size, mode, grid, tile)[0]  # serve's way back
        window = resize_boxes(np.array([[0, 0, width, height]]), width, height, size, mode, grid)
        assert np.all(back >= 0) and np.all(back <= [width, height, width, height])
        if mode in ("squash", "letterbox"):  # nothing cut: the very box
            np.testing.assert_allclose(back, box, atol=1e-3)
        assert len(window) == len(images)
        if min(b[2] - b[0], b[3] - b[1]) < 3:
            continue  # too thin to survive resampling as pixels above half
        assert np.abs(_extent(image) - b).max() <= 1.0, (b, _extent(image))


@settings(max_examples=300, deadline=None)
@given(image_and_box(), st.integers(0, 2**31), st.booleans())
def test_boxes_follow_flips_and_rotations_exactly(case, seed, pixel_ops):
    """Flips and 90° rotations move boxes exactly; blur, noise and colour ops leave them."""
    width, height, box = case
    spec = AugmentSpec(
        copies=1,
        hflip=True,
        vflip=True,
        rotate=[0, 90, 180, 270, -90, 450],
        blur=1.0 if pixel_ops else 0.0,
        noise=20.0 if pixel_ops else 0.0,
        brightness=0.1 if pixel_ops else 0.0,
    )
    image, ops = augment(_mask(width, height, box), spec, np.random.default_rng(seed))
    moved = augment_boxes(np.array([box]), width, height, ops)[0]
    geometric = [op for op in ops if op in ("hflip", "vflip") or op.startswith("rotate")]
    plain, _ = augment(_mask(width, height, box), AugmentSpec(copies=1), np.random.default_rng(0))
    reference = plain
    for op in geometric:  # the same geometric ops alone, on the clean mask: exact pixels
        pil = Image.fromarray(reference[:, :, 0])
        if op == "hflip":
            pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif op == "vflip":
            pil = pil.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        else:
            pil = pil.rotate(int(op.removeprefix("rotate")), expand=True)
        reference = np.asarray(pil)[:, :, None]
    np.testing.assert_array_equal(_extent(reference), moved)
    if not pixel_ops:
        np.testing.assert_array_equal(_extent(image), moved)


def test_min_visible_keeps_mostly_inside_boxes():
    """A crop keeps a box cut to at least MIN_VISIBLE of its area and drops the rest."""
    boxes = np.array([[0, 0, 10, 10], [0, 40, 10, 50]], np.float32)  # 100x50 → crop x 25..75
    ((out, keep),) = resize_boxes(boxes, 100, 50, 50, "center_crop")
    assert keep.tolist() == []
    ((out, keep),) = resize_boxes(np.array([[20, 0, 30, 10]]), 100, 50, 50, "center_crop")
    assert keep.tolist() == [0] and 0.5 >= MIN_VISIBLE
    np.testing.assert_allclose(out[0], [0, 0, 5, 10])


# ----------------------------------------------------------------- spec


def spec_errors(tmp_path: Path, text: str) -> str:
    """The SpecError message of a spec.yaml holding ``text`` (it must be refused)."""
    from xvhpc.spec import SpecError, load_spec

    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return str(info.value)


def test_detect_spec_errors_name_line_key_and_choices(tmp_path: Path) -> None:
    """A classifier under task: detect, a typo, a non-exact rotation and pretrained imagenet:
    all reported at once with their lines; a detector under task: classify too."""
    text = spec_errors(
        tmp_path,
        "name: d\n"
        "task: detect\n"
        "data:\n"
        "  source: a.json\n"
        "  augment: {cell: {copies: 1, rotate: [45]}}\n"
        "model: {arch: resnet18}\n"
        "train: {balanced_sampling: true}\n",
    )
    assert (
        "spec.yaml:6: model.arch: 'resnet18' is a model of task: classify; set task: classify"
        in text
    )
    assert "fcos_tiny" in text and "fasterrcnn_resnet50_fpn_v2" in text
    assert "spec.yaml:6: model.pretrained: 'imagenet'" in text
    assert "spec.yaml:5: data.augment.cell.rotate: [45]" in text
    assert "spec.yaml:7: train.balanced_sampling: not supported with task: detect" in text
    typo = "name: d\ntask: detect\ndata: {source: a.json}\nmodel: {arch: fcos_tiyn}\n"
    assert "did you mean fcos_tiny?" in spec_errors(tmp_path, typo)
    classify = "name: d\ndata: {source: a.json}\nmodel: {arch: fcos_tiny}\n"
    assert "model.arch: 'fcos_tiny' is a model of task: detect; set task: detect" in spec_errors(
        tmp_path, classify
    )


def test_cross_validation_with_detection_is_refused_at_its_lines(tmp_path: Path) -> None:
    """The detection catalog does not assign folds or a select split: refused, not ignored."""
    text = spec_errors(
        tmp_path,
        "name: d\ntask: detect\n"
        "data:\n  source: a.json\n  split: {folds: 3, select: 0.2}\n"
        "model: {arch: fcos_tiny, pretrained: none}\n",
    )
    assert "spec.yaml:5: data.split.folds: not supported with task: detect" in text
    assert "spec.yaml:5: data.split.select: not supported with task: detect" in text


# ----------------------------------------------------------------- boxes in the file's pixels
def _jpeg(path: Path, width: int, height: int, square: tuple[int, int, int, int], **save) -> Path:
    pixels = np.zeros((height, width, 3), np.uint8)
    x0, y0, x1, y1 = square
    pixels[y0:y1, x0:x1] = 255
    Image.fromarray(pixels).save(path, "JPEG", quality=95, **save)
    return path


def test_large_and_rotated_jpegs_keep_their_boxes_in_stored_pixels(tmp_path: Path) -> None:
    """A JPEG over twice the model size decodes reduced for classification; its boxes are in
    full-size pixels, so detection decodes the stored pixels (full size, no EXIF rotation)."""
    from xvhpc.data.decode import DecodeOptions
    from xvhpc.data.records import SampleJob
    from xvhpc.data.sample import Sample
    from xvhpc.spec.schema import DataSpec
    from xvhpc.tasks.detect.ingest import process_detection

    big = _jpeg(tmp_path / "big.jpg", 1024, 1024, (512, 512, 768, 768))
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6  # stored 60 wide x 40 high, shown rotated
    rotated = _jpeg(tmp_path / "rot.jpg", 60, 40, (45, 5, 58, 15), exif=exif.tobytes())
    spec = DataSpec(source=str(tmp_path / "boxes.csv"))
    cases = [  # file, box, resize mode, boxes expected per output image
        (big, (512, 512, 768, 768), "squash", [[[32, 32, 48, 48, 0]]]),
        (big, (512, 512, 768, 768), "letterbox", [[[32, 32, 48, 48, 0]]]),
        (big, (512, 512, 768, 768), "tile", [[], [], [], [[0, 0, 32, 32, 0]]]),
        (rotated, (45, 5, 58, 15), "squash", [[[48, 8, 61.87, 24, 0]]]),
    ]
    for path, box, mode, expected in cases:
        sample = Sample(str(path), path.name, "cell", target=((*map(float, box), 0),))
        opts = DecodeOptions(size=64, channels=3, resize=mode)
        records, why = process_detection(SampleJob(sample, 0, spec, opts))
        assert why is None
        got = [np.round(r.target.astype(np.float64), 2).tolist() for r in records]
        assert got == expected, (path.name, mode, got)


def test_served_boxes_are_in_the_uploaded_images_pixels(tmp_path: Path) -> None:
    """A perfect detector at 64 px on a 1,024 px JPEG: the box comes back at full size; a
    background label (FCOS/RetinaNet may output 0) and a box in the letterbox padding are not
    reported; an image smaller than the tile grid is a bad image, not a server error."""
    import torch

    from xvhpc.data.decode import BadImage, DecodeOptions
    from xvhpc.tasks.detect.predict import detect_image

    big = _jpeg(tmp_path / "big.jpg", 1024, 512, (512, 128, 768, 384)).read_bytes()

    class Bundle:  # the parts detect_image uses
        classes = ["cat", "dog"]
        device = torch.device("cpu")
        decode_options = DecodeOptions(size=64, channels=3, resize="letterbox")

        @staticmethod
        def model(images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
            boxes = [[32.0, 24.0, 48.0, 40.0], [0.0, 0.0, 8.0, 8.0], [10.0, 2.0, 20.0, 10.0]]
            return [
                {
                    "boxes": torch.tensor(boxes),  # the square; background; in the padding
                    "scores": torch.tensor([0.9, 0.8, 0.7]),
                    "labels": torch.tensor([1, 0, 2]),
                }
                for _ in images
            ]

    found = detect_image(Bundle(), big, "big.jpg")  # type: ignore[arg-type]
    assert found == [{"label": "cat", "confidence": 0.9, "box": [512.0, 128.0, 768.0, 384.0]}]
    Bundle.decode_options = DecodeOptions(size=64, channels=3, resize="tile")
    tiny = tmp_path / "tiny.png"
    Image.new("L", (1, 1)).save(tiny)
    with pytest.raises(BadImage, match="smaller than the 2x2 tile grid"):
        detect_image(Bundle(), tiny.read_bytes(), "tiny.png")  # type: ignore[arg-type]


def test_resampled_ap_kernel_equals_pycocotools_and_weights_repeat_images() -> None:
    """At weights of one the bootstrap's AP is pycocotools' AP per class and IoU; a weight of
    two is the image listed twice (pycocotools again)."""
    from xvhpc.tasks.detect.metrics import Found, Truth, class_matches, coco_eval, weighted_ap

    rng = np.random.default_rng(1)
    truth, found = [], []
    for _ in range(30):
        m = int(rng.integers(0, 4))
        corner = rng.uniform(0, 50, (m, 2))
        boxes = np.hstack([corner, corner + rng.uniform(5, 20, (m, 2))])
        truth.append(Truth(boxes, rng.integers(0, 2, m)))
        guess = np.vstack([boxes + rng.normal(0, 3, boxes.shape), rng.uniform(0, 40, (2, 4))])
        guess[:, 2:] = np.maximum(guess[:, 2:], guess[:, :2] + 1)
        found.append(Found(guess, rng.uniform(0, 1, len(guess)), rng.integers(0, 2, len(guess))))
    doubled = np.ones((1, 30))
    doubled[0, :5] = 2
    ev, ev2 = (
        coco_eval(truth, found, ["a", "b"]),
        coco_eval(truth + truth[:5], found + found[:5], ["a", "b"]),
    )
    for k in range(2):
        ones = weighted_ap(class_matches(ev, k, 30), np.ones((1, 30)))[0]
        np.testing.assert_allclose(ones, ev.eval["precision"][:, :, k, 0, -1].mean(1), atol=1e-12)
        twice = weighted_ap(class_matches(ev, k, 30), doubled)[0]
        np.testing.assert_allclose(twice, ev2.eval["precision"][:, :, k, 0, -1].mean(1), atol=1e-9)


# ----------------------------------------------------------------- ingest


def _bad_boxes_coco(root: Path) -> Path:
    """Four 40x30 images: good boxes, each kind of bad box, and an image without any."""
    (root / "im").mkdir(parents=True)
    doc: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
    boxes = {
        0: [[4, 4, 10, 8], [20, 10, 10, 10]],  # good, good
        1: [[5, 5, 0, 7], [50, 5, 5, 5], [30, 20, 20, 20]],  # zero area, outside, clipped
        2: [[2, 2, 6, 6]],  # unknown category (below)
        3: [],  # no boxes: a negative
    }
    for i, listed in boxes.items():
        Image.fromarray(np.full((30, 40, 3), 20 * i, np.uint8)).save(root / "im" / f"{i}.png")
        doc["images"].append({"id": i, "file_name": f"im/{i}.png", "width": 40, "height": 30})
        for bbox in listed:
            category = 7 if i == 2 else 1
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": i,
                    "category_id": category,
                    "bbox": bbox,
                }
            )
    path = root / "coco.json"
    path.write_text(json.dumps(doc))
    return path


def test_bad_boxes_are_skipped_with_reasons_and_negatives_kept(tmp_path: Path) -> None:
    """COCO and the CSV form agree; bad boxes are listed with their reasons, the rest ingested."""
    from xvhpc.spec.schema import DataSpec
    from xvhpc.tasks.detect.catalog import build_detection_catalog

    coco = _bad_boxes_coco(tmp_path)
    catalog = build_detection_catalog(coco, DataSpec(source=str(coco)))
    reasons = sorted(d["reason"] for d in catalog.ignored)
    assert [r.split(" (")[0] for r in reasons] == [
        "box skipped: outside the image",
        "box skipped: unknown category_id 7",
        "box skipped: zero or negative area",
    ]
    by_path = {s.rel: s.target for s in catalog.samples}
    assert by_path == {
        "im/0.png": ((4.0, 4.0, 14.0, 12.0, 0), (20.0, 10.0, 30.0, 20.0, 0)),
        "im/1.png": ((30.0, 20.0, 40.0, 30.0, 0),),  # clipped to the image
        "im/2.png": (),
        "im/3.png": (),
    }
    rows = ["path,label,x0,y0,x1,y1"]
    rows += [f"im/0.png,cell,{b[0]},{b[1]},{b[2]},{b[3]}" for b in by_path["im/0.png"]]
    rows += ["im/1.png,cell,5,5,5,12", "im/1.png,cell,50,5,55,10", "im/1.png,cell,30,20,50,40"]
    rows += ["im/3.png,,,,,", "im/9.png,cell,1,1,2,2"]
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    csv_catalog = build_detection_catalog(tmp_path / "boxes.csv", DataSpec(source="x"))
    assert {s.rel: s.target for s in csv_catalog.samples} == {
        k: v for k, v in by_path.items() if k != "im/2.png"
    }
    assert [d["reason"].split(" (")[0] for d in csv_catalog.ignored] == [
        "box skipped: zero or negative area",
        "box skipped: outside the image",
    ]
    assert csv_catalog.skipped == [{"path": "im/9.png", "reason": "file not found (CSV line 8)"}]


# ----------------------------------------------------------------- train, evaluate, serve

TRAIN = {
    "max_iterations": 120,
    "batch_size": 8,
    "optimizer": "adamw",
    "learning_rate": 0.002,
    "weight_decay": 0.0001,
    "warmup_iterations": 30,
    "amp": False,
    "val_every": 60,
    "checkpoint_every": 10,
    "log_every": 5,
    "workers": 0,
}


ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # 2 shared cores: no spinning thread pools


def _detect_spec(path: Path, source: Path, **train) -> Path:
    spec = {
        "name": "shapes",
        "task": "detect",
        "data": {
            "source": str(source),
            "image_size": 64,
            "resize": "letterbox",
            "coco": {"group_field": "group"},
            "split": {"validation": 0.25, "seed": 1},
            "augment": {
                "red_box": {"copies": 1, "hflip": True, "rotate": [90, 270]},
                "green_box": {"copies": 1, "vflip": True, "rotate": [180], "noise": 3.0},
            },
        },
        "model": {"arch": "fcos_tiny", "pretrained": "none"},
        "train": {**TRAIN, **train},
        "resources": {"nodes": 1, "processes_per_node": 1, "walltime": "00:20:00"},
        "evaluate": {"bootstrap": 1000},
        "deploy": {"threshold": 0.3},
    }
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    from xvhpc.tasks.detect.synth import make_detection_dataset

    return make_detection_dataset(tmp_path_factory.mktemp("shapes"), images=100, size=64, seed=0)


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory, shapes: Path) -> Path:
    """The whole local pipeline (ingest → train → evaluate → report) on synthetic shapes."""
    work = tmp_path_factory.mktemp("detect")
    spec = _detect_spec(work / "spec.yaml", shapes)
    xv("run", str(spec), "--out", str(work / "run"), cwd=work, env=ONE_THREAD)
    return work / "run"


def test_tiny_detector_learns_shapes(detect_run: Path) -> None:
    """fcos_tiny on 64 px synthetic shapes reaches mAP@.5 ≥ 0.8 on the validation split."""
    metrics = json.loads((detect_run / "eval" / "0" / "metrics.json").read_text())
    assert metrics["map50"]["value"] >= 0.8, metrics["map50"]
    assert metrics["map50"]["ci_low"] <= metrics["map50"]["value"] <= metrics["map50"]["ci_high"]
    assert set(metrics["per_class_ap"]) == {"red_box", "green_box"}
    manifest = json.loads((detect_run / "manifest.json").read_text())
    assert manifest["counts_before_augmentation"]["train"]["(no boxes)"] > 0  # negatives kept
    # training writes detection's own metrics (mAP@.5 chooses the bundle), no accuracy alias
    progress = json.loads((detect_run / "train" / "0" / "progress.json").read_text())
    assert {"val_map50", "val_map", "val_loss"} <= set(progress) and "val_accuracy" not in progress
    log = (detect_run / "train" / "0" / "metrics.jsonl").read_text()
    assert '"val_map50"' in log and "val_accuracy" not in log
    lines = (detect_run / "eval" / "0" / "predictions.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert {"path", "truth", "predicted"} <= set(first)
    assert all(p["confidence"] >= 0.3 for line in lines for p in json.loads(line)["predicted"])
    report = (detect_run / "report.html").read_text()
    assert "mAP@.5" in report and "data:image/png;base64" in report


def test_serve_returns_boxes_on_the_uploaded_image(detect_run: Path, shapes: Path) -> None:
    """/v1/predict on a detection bundle: {label, confidence, box} at or above the threshold,
    in the uploaded image's pixels (here a 128 px upscale of a 64 px validation image)."""
    from fastapi.testclient import TestClient

    from xvhpc.models.bundle import load_bundle
    from xvhpc.serve.app import create_app

    doc = json.loads(shapes.read_text())
    line = json.loads((detect_run / "eval" / "0" / "predictions.jsonl").read_text().splitlines()[0])
    image = next(im for im in doc["images"] if im["file_name"] == line["path"])
    truth = [a["bbox"] for a in doc["annotations"] if a["image_id"] == image["id"]]
    big = Image.open(shapes.parent / image["file_name"]).resize(
        (128, 128), Image.Resampling.NEAREST
    )
    png = shapes.parent / "big.png"
    big.save(png)
    client = TestClient(create_app(load_bundle(detect_run / "model")))
    reply = client.post("/v1/predict", files={"file": ("big.png", png.read_bytes())})
    assert reply.status_code == 200, reply.text
    found = reply.json()["predictions"]
    assert all(p["confidence"] >= 0.3 and p["label"] in ("red_box", "green_box") for p in found)
    assert [p["confidence"] for p in found] == sorted(
        (p["confidence"] for p in found), reverse=True
    )
    for x, y, w, h in truth:  # every true box found (IoU ≥ 0.5), at twice the ingest scale
        want = np.array([x, y, x + w, y + h]) * 2
        assert any(_iou(want, np.array(p["box"])) >= 0.5 for p in found), (want, found)
    low = client.post(
        "/v1/predict", files={"file": ("big.png", png.read_bytes())}, data={"threshold": "0.9"}
    )
    assert all(p["confidence"] >= 0.9 for p in low.json()["predictions"])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    return float(inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter))


def test_export_torchscript_and_onnx_give_the_model_s_boxes(detect_run: Path, tmp_path) -> None:
    """fcos_tiny exports (TorchScript by scripting, ONNX one image per call) and both files
    return the bundle's own detections for a validation image."""
    import onnxruntime as ort
    import torch

    from xvhpc.models.bundle import load_bundle
    from xvhpc.serve.export import export

    bundle = load_bundle(detect_run / "model")
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    image[:, 10:30, 20:50] = 1.0
    scripted = torch.jit.load(str(export(detect_run, "torchscript", tmp_path / "m.pt")))
    with torch.no_grad():
        want = bundle.model([image])[0]
        _, got = scripted([image])
    np.testing.assert_allclose(got[0]["boxes"].numpy(), want["boxes"].numpy(), atol=1e-4)
    onnx = export(detect_run, "onnx", tmp_path / "m.onnx")
    session = ort.InferenceSession(str(onnx))
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"image": image.numpy()}), strict=True))
    np.testing.assert_allclose(got["boxes"], want["boxes"].numpy(), atol=1e-3)
    np.testing.assert_array_equal(got["labels"], want["labels"].numpy())
    np.testing.assert_allclose(got["scores"], want["scores"].numpy(), atol=1e-4)
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    assert sidecar["task"] == "detect" and sidecar["classes"] == ["red_box", "green_box"]


def test_predict_lines_write_boxes_and_skips(detect_run: Path, shapes: Path, tmp_path) -> None:
    """The predict job's detection chunk: one JSON line per file, boxes at the deployed
    threshold, an undecodable file skipped with its reason (the others go on)."""
    from xvhpc.models.bundle import load_bundle
    from xvhpc.tasks.detect.predict import predict_lines

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    good = sorted((shapes.parent / "images").glob("*.png"))[:2]
    items = [{"path": str(p), "rel": p.name} for p in [good[0], bad, good[1]]]
    text, done, skipped = predict_lines(load_bundle(detect_run / "model"), items)
    rows = [json.loads(line) for line in text.splitlines()]
    assert (done, skipped) == (2, 1) and [r["path"] for r in rows] == [i["rel"] for i in items]
    assert "skipped" in rows[1] and "boxes" not in rows[1]
    assert all(b["confidence"] >= 0.3 for r in (rows[0], rows[2]) for b in r["boxes"])


# ----------------------------------------------------------------- catalog: malformed COCO / CSV


def _catalog_images(root: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(root / name)


def _coco_doc() -> dict:
    return {
        "images": [
            {"id": i, "file_name": f"{n}.png", "width": 60, "height": 40}
            for i, n in ((1, "a"), (2, "b"), (3, "c"))
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 10, 10]},
        ],
    }


def _coco_catalog(root: Path, change) -> object:
    from xvhpc.spec.schema import DataSpec
    from xvhpc.tasks.detect.catalog import build_detection_catalog

    doc = _coco_doc()
    change(doc)
    (root / "x.json").write_text(json.dumps(doc))
    return build_detection_catalog(root / "x.json", DataSpec(source=str(root / "x.json")))


@pytest.mark.parametrize(
    "where, change, message",
    [  # review items 3, 4, 7, 8, 10: each a CatalogError naming the entry and key
        ("ids", lambda d: d["images"][1].update(id=1), "images: id 1 listed twice"),
        ("alias", lambda d: d["images"][1].update(file_name="./a.png"), "images[1].file_name"),
        ("width", lambda d: d["images"][0].update(width="60"), "images[0].width: expected a"),
        ("null", lambda d: d["images"][0].update(height=None), "images[0].height: expected"),
        ("id", lambda d: d["images"][0].update(id=[1]), "images[0].id: expected an integer"),
        (
            "cat",
            lambda d: d["annotations"][0].update(category_id=[1]),
            "annotations[0].category_id",
        ),
        ("list", lambda d: d["annotations"].append([1, 2]), "annotations[2]: expected an object"),
        ("crowd", lambda d: d["annotations"][0].update(iscrowd="0"), "annotations[0].iscrowd"),
        ("catid", lambda d: d["categories"].append({"id": 1, "name": "cow"}), "id 1 listed twice"),
        ("name", lambda d: d["categories"].append({"id": 3, "name": "cat"}), "name cat listed"),
        ("null name", lambda d: d["categories"][0].update(name=None), "categories[0].name"),
    ],
)
def test_coco_catalog_refuses_malformed_entries_by_name(tmp_path, where, change, message):
    from xvhpc.data.sample import CatalogError

    _catalog_images(tmp_path)
    with pytest.raises(CatalogError, match=re.escape(message)) as err:
        _coco_catalog(tmp_path, change)
    assert str(tmp_path / "x.json") in str(err.value)


def test_coco_catalog_skips_dangling_bad_bbox_and_nul_names_with_reasons(tmp_path) -> None:
    """Items 3, 7, 10: mixed str/int category ids sort; bad bboxes and NUL names are skipped."""

    def change(d: dict) -> None:
        d["categories"].append({"id": "3", "name": "owl"})
        d["annotations"] += [
            {"id": 7, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 8, "image_id": 3, "category_id": 1, "bbox": "1234"},
            {"id": 9, "image_id": 3, "category_id": 2, "bbox": [1, 1, 10**400, 5]},
            {"id": 10, "image_id": 3, "category_id": "3", "bbox": [1, 1, 5, 5], "iscrowd": 0},
        ]
        d["images"].append({"id": 4, "file_name": "a\x00.png"})

    _catalog_images(tmp_path)
    catalog = _coco_catalog(tmp_path, change)
    assert catalog.classes == ["cat", "dog", "owl"]
    assert {s.rel: s.target for s in catalog.samples}["c.png"] == ((1.0, 1.0, 6.0, 6.0, 2),)
    assert [s["reason"] for s in catalog.skipped] == [
        "annotation for image_id 99, which no image has (COCO annotation id 7)",
        "invalid path: embedded null byte (COCO image id 4)",
    ]
    assert [d["reason"].split(" (")[0] for d in catalog.ignored] == [
        "box skipped: bbox is not 4 numbers [x, y, width, height]: '1234'",
        "box skipped: not a finite number",
    ]


def test_csv_catalog_merges_aliases_decodes_cp1252_and_skips_group_conflicts(tmp_path) -> None:
    """Items 4, 10, 11, 15 on the CSV form; the NUL-name fix holds for classification too."""
    from xvhpc.data.catalog import build_catalog
    from xvhpc.data.sample import CatalogError
    from xvhpc.spec.schema import DataSpec
    from xvhpc.tasks.detect.catalog import build_detection_catalog

    _catalog_images(tmp_path)
    rows = ["path,label,x0,y0,x1,y1,g", "a.png,café,1,1,10,10,p1", "./a.png,dog,2,2,9,9,p1"]
    rows += [
        "b.png,dog,1,1,10,10,p1",
        "b.png,dog,1,1,10,10,p2",
        "c.png,dog,1,1,5,5,",
        "a\x00.png,dog,1,1,2,2,",
    ]
    (tmp_path / "x.csv").write_bytes("\n".join(rows).encode("cp1252"))
    spec = DataSpec(source="x", csv={"group_column": "g"})
    catalog = build_detection_catalog(tmp_path / "x.csv", spec)
    assert catalog.classes == ["café", "dog"]
    assert [(s.rel, s.target, s.group) for s in catalog.samples] == [
        ("a.png", ((1.0, 1.0, 10.0, 10.0, 0), (2.0, 2.0, 9.0, 9.0, 1)), "p1"),
        ("c.png", ((1.0, 1.0, 5.0, 5.0, 1),), None),
    ]
    assert any("boxes merged: ./a.png, a.png" in n for n in catalog.notes)
    assert [s["reason"] for s in catalog.skipped] == [
        "invalid path: embedded null byte (CSV line 7)",
        "rows give different g values (p1 on line 4, p2 on line 5)",
    ]
    mapped = DataSpec(source="x", csv={"label_map": {"dog": " "}})
    with pytest.raises(CatalogError, match="line 3: data.csv.label_map maps 'dog' to ' '"):
        build_detection_catalog(tmp_path / "x.csv", mapped)
    (tmp_path / "y.csv").write_text("path,label\na.png,cat\nb\x00.png,dog\nc.png,dog\n")
    classified = build_catalog(tmp_path / "y.csv", DataSpec(source="x"))
    assert [s["reason"] for s in classified.skipped] == [
        "invalid path: embedded null byte (CSV line 3)"
    ]


def test_coco_sizes_that_disagree_with_the_file_are_noted_and_the_files_used(tmp_path) -> None:
    """Hardening finding 4: an image declared 10x10 (really 60x40) kept its box [5,5,20,20]
    clipped to [5,5,10,10] silently; now the file's own size is used and the mismatch noted."""

    def change(d: dict) -> None:
        d["images"][1].update(width=10, height=10)
        d["annotations"][1]["bbox"] = [5, 5, 15, 15]

    _catalog_images(tmp_path)
    catalog = _coco_catalog(tmp_path, change)
    assert {s.rel: s.target for s in catalog.samples}["b.png"] == ((5.0, 5.0, 20.0, 20.0, 1),)
    assert any(
        n.startswith("b.png: COCO width/height 10x10 differ from the file's 60x40")
        for n in catalog.notes
    ), catalog.notes
    assert not any("a.png: COCO" in n for n in catalog.notes)  # sizes that agree: no note


def test_boxes_that_straddle_tiles_are_listed_not_lost_silently(tmp_path: Path) -> None:
    """Hardening finding 5: a box with under 30% in each tile is in no tile; ingest now lists it
    (the image is still written), so the manifest's notes and its skipped list add up."""
    from tests.conftest import xv

    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    doc: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    for i in range(6):
        Image.fromarray(np.full((128, 128, 3), 40 * i, np.uint8)).save(images / f"i{i}.png")
        doc["images"].append({"id": i + 1, "file_name": f"i{i}.png", "width": 128, "height": 128})
        centred = i % 2 == 0  # 25% of the box in each of the 4 tiles
        bbox = [48, 48, 32, 32] if centred else [4, 4, 20, 20]
        doc["annotations"].append(
            {"id": i + 1, "image_id": i + 1, "category_id": 1 + i % 2, "bbox": bbox}
        )
    (tmp_path / "data" / "coco.json").write_text(json.dumps(doc))
    spec = {
        "name": "tiles", "task": "detect",
        "data": {"source": str(tmp_path / "data" / "coco.json"), "image_size": 64, "resize": "tile",
                 "tile_grid": 2, "shards": 1, "coco": {"image_dir": "images"},
                 "split": {"validation": 0.34, "seed": 1}},
        "model": {"arch": "fcos_tiny", "pretrained": "none"},
    }  # fmt: skip
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    run = tmp_path / "run"
    xv("compile", str(tmp_path / "spec.yaml"), "--out", str(run))
    xv("ingest", "--run-dir", str(run), "--shard", "all", "--merge")
    manifest = json.loads((run / "manifest.json").read_text())
    lost = [s for s in manifest["skipped"] if "straddle the tiles" in s["reason"]]
    assert sorted(s["path"] for s in lost) == ["i0.png", "i2.png", "i4.png"]
    assert all(s["reason"].startswith("box skipped: 1 of 1 box(es)") for s in lost)
    # data.min_box_visible 0.2: the quarter in each tile is kept, clipped, in all four
    spec["data"]["min_box_visible"] = 0.2
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    kept = tmp_path / "kept"
    xv("compile", str(tmp_path / "spec.yaml"), "--out", str(kept))
    xv("ingest", "--run-dir", str(kept), "--shard", "all", "--merge")
    manifest = json.loads((kept / "manifest.json").read_text())
    assert not [s for s in manifest["skipped"] if "straddle" in s["reason"]]


def test_a_video_gives_every_frame_s_boxes_and_a_named_frame_its_own(
    detect_run: Path, shapes: Path, tmp_path: Path
) -> None:
    """Predict on a whole video: the boxes of every frame data.video keeps, each with its time,
    equal to the boxes of that frame named alone (``clip.mp4#t=``); a CSV of named frames is
    listed as those frames (their video read), and a frame past the end is skipped."""
    from PIL import Image

    from xvhpc.data.synth import encode_video, pan
    from xvhpc.models.bundle import load_bundle
    from xvhpc.plan.predict import list_inputs
    from xvhpc.tasks.detect.predict import detect_image, predict_lines

    image = np.asarray(Image.open(sorted((shapes.parent / "images").glob("*.png"))[0]))
    encode_video(tmp_path / "clip.mp4", (pan(image, 2 * i, i, 20) for i in range(5)), 5)
    bundle = load_bundle(detect_run / "model")
    boxes = detect_image(bundle, tmp_path / "clip.mp4", "clip.mp4")
    times = sorted({b["t"] for b in boxes})
    assert [b["t"] for b in boxes] == sorted(b["t"] for b in boxes) and len(times) >= 4, boxes
    for t in times:
        alone = detect_image(bundle, tmp_path / "clip.mp4", f"clip.mp4#t={t}")
        assert [{**b, "t": t} for b in alone] == [b for b in boxes if b["t"] == t]
    (tmp_path / "frames.csv").write_text("path\nclip.mp4#t=0.4\nclip.mp4#frame=1\nclip.mp4#t=9\n")
    items, skipped = list_inputs(tmp_path / "frames.csv", {})
    # a video's #frame= names sort before its #t= names (numbers and seconds: two scales)
    assert [i["rel"] for i in items] == ["clip.mp4#frame=1", "clip.mp4#t=0.400", "clip.mp4#t=9.000"]
    assert {i["path"] for i in items} == {str((tmp_path / "clip.mp4").resolve())} and not skipped
    rows = [json.loads(line) for line in predict_lines(bundle, items)[0].splitlines()]
    kept = [b for b in boxes if b["t"] == 0.4 and b["confidence"] >= 0.3]  # deploy.threshold
    assert kept == [{**b, "t": 0.4} for b in rows[1]["boxes"]]
    assert rows[2]["skipped"].startswith("no frame within 0.200 s of 9.000 s")
    # serve: top_k keeps each frame's most confident boxes, not the first frames' boxes only
    from xvhpc.tasks.detect.predict import serve_response

    data = (tmp_path / "clip.mp4").read_bytes()
    served = serve_response(bundle, data, "clip.mp4", 0.0, top_k=1)["predictions"]
    assert served == [next(b for b in boxes if b["t"] == t) for t in times]
    from xvhpc.data.decode import BadImage

    with pytest.raises(BadImage, match="a named frame"):  # one frame of uploaded bytes: refused
        serve_response(bundle, data, "clip.mp4#t=0.4", 0.0, top_k=1)
