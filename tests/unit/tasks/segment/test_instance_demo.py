"""A tiny Mask R-CNN run on the instance demo data on CPU (``xvhpc run``: ingest → train →
evaluate → report, COCO objects of two classes, some touching), then serve, predict and the
TorchScript export of its model giving the same objects.

Measured (2 shared CPU cores, OMP_NUM_THREADS=1, about 70 s): 40 images of 48 px, 100 AdamW
iterations of batch 8 → mask AP@.5 0.820 (95 % bootstrap CI 0.633–0.979 over the 10 validation
images, 20 objects), AP@[.5:.95] 0.448 (0.331–0.575); the painted label maps' mIoU 0.736
(0.618–0.822). The test asserts AP@.5 ≥ 0.55 and mIoU ≥ 0.55, margins below the intervals'
lower ends (an untrained model scores about 0). 150 iterations (about 90 s) reach AP@.5 0.926
(0.802–1.000), AP@[.5:.95] 0.574 (0.465–0.684), mIoU 0.879 (0.859–0.893)."""

from __future__ import annotations

import argparse
import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_spec, xv
from xvhpc.registry import load_task

AP50_FLOOR, MIOU_FLOOR = 0.55, 0.55


@pytest.fixture(scope="module")
def instance_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("segment-instances")
    args = argparse.Namespace(out=str(work / "data"), seed=0, task="segment", per_class=40, size=48)
    assert load_task("segment").synth(args) == 0
    spec = tiny_spec(
        work / "spec.yaml",
        work / "data" / "instances" / "instances.json",
        name="segment-instances",
        task="segment",
        data={"image_size": 48, "coco": {"group_field": "group"}},
        model={"arch": "maskrcnn_tiny", "pretrained": "none"},
        train={"max_iterations": 100, "val_every": 50, "checkpoint_every": 50,
               "learning_rate": 0.003, "optimizer": "adamw", "batch_size": 8},
        evaluate={"bootstrap": 1000},
    )  # fmt: skip
    xv("run", str(spec), "--out", str(work / "run"), cwd=work, env={"OMP_NUM_THREADS": "1"})
    return work / "run"


def test_maskrcnn_tiny_learns_the_demo_instances(instance_run: Path) -> None:
    m = json.loads((instance_run / "eval" / "0" / "metrics.json").read_text())
    assert m["classes"] == ["background", "device", "marker"] and m["objects"] >= 15
    ap = m["mask_map50"]
    assert ap["value"] >= AP50_FLOOR and ap["ci_low"] <= ap["value"] <= ap["ci_high"], ap
    assert m["mask_map"]["value"] <= ap["value"]
    assert set(m["per_class_mask_ap"]) == {"device", "marker"}
    assert m["miou"]["value"] >= MIOU_FLOOR, m["miou"]  # of the painted label maps
    progress = json.loads((instance_run / "train" / "0" / "progress.json").read_text())
    assert progress["val_miou"] >= MIOU_FLOOR  # what chose the checkpoint
    report = (instance_run / "report.html").read_text()
    assert "mask AP@[.5:.95]" in report and "Segmentation, point 0" in report


def _images(run: Path) -> list[Path]:
    return sorted((run.parent / "data" / "instances" / "images").iterdir())[:3]


def test_serve_and_predict_give_the_same_instances(instance_run: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from xvhpc.models.bundle import load_bundle
    from xvhpc.serve.app import create_app
    from xvhpc.tasks.segment.predict import predict_rows

    bundle = load_bundle(instance_run / "model")
    client = TestClient(create_app(bundle))
    items = [{"path": str(p), "rel": p.name} for p in _images(instance_run)]
    _, done, skipped = predict_rows(bundle, items, tmp_path)
    assert (done, skipped) == (3, 0)
    found_any = False
    for item, path in zip(items, _images(instance_run), strict=True):
        reply = client.post("/v1/predict", files={"file": (path.name, path.read_bytes())}).json()
        written = json.loads((tmp_path / "instances" / f"{item['rel']}.json").read_text())
        assert reply["instances"] == written["instances"]
        found_any |= bool(reply["instances"])
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["mask"]))))
        saved = np.asarray(Image.open(tmp_path / "masks" / f"{item['rel']}.png"))
        assert mask.shape == (48, 48) and np.array_equal(mask, saved)
        for o, p in zip(reply["instances"], reply["predictions"], strict=True):
            assert o["label"] == p["label"] and o["box"] == p["box"] and o["confidence"] >= 0.5
    assert found_any


def test_torchscript_export_gives_the_model_s_objects(instance_run: Path, tmp_path: Path) -> None:
    import torch

    from xvhpc.cli import main
    from xvhpc.models.bundle import load_bundle

    out = tmp_path / "model.pt"
    assert main(["export", str(instance_run), "--format", "torchscript", "--out", str(out)]) == 0
    scripted = torch.jit.load(str(out)).eval()
    model = load_bundle(instance_run / "model").model.eval()
    image = torch.from_numpy(np.asarray(Image.open(_images(instance_run)[0]).convert("RGB")))
    x = [image.permute(2, 0, 1).float() / 255]
    with torch.no_grad():
        want = model(x)[0]
        got = scripted(x)[1][0]
    assert len(want["scores"]) and torch.allclose(got["scores"], want["scores"], atol=1e-5)
    assert torch.allclose(got["masks"], want["masks"], atol=1e-4)
    sidecar = json.loads((tmp_path / "model.pt.json").read_text())
    assert sidecar["mode"] == "instance"


def test_onnx_export_gives_the_model_s_objects(instance_run: Path, tmp_path: Path) -> None:
    """ONNX Runtime on the exported Mask R-CNN: the same objects as the model, within 1e-4."""
    import onnxruntime as ort
    import torch

    from xvhpc.cli import main
    from xvhpc.models.bundle import load_bundle

    out = tmp_path / "model.onnx"
    assert main(["export", str(instance_run), "--format", "onnx", "--out", str(out)]) == 0
    model = load_bundle(instance_run / "model").model.eval()
    first, second = (Image.open(p).convert("RGB") for p in _images(instance_run)[:2])
    for picture in (first, second, first.resize((64, 40))):  # another size than the export's
        image = torch.from_numpy(np.asarray(picture))
        x = image.permute(2, 0, 1).float() / 255
        with torch.no_grad():
            want = model([x])[0]
        boxes, labels, scores, masks = ort.InferenceSession(str(out)).run(
            None, {"image": x.numpy()}
        )
        assert len(want["scores"]) and labels.tolist() == want["labels"].tolist()
        assert np.allclose(scores, want["scores"].numpy(), atol=1e-4)
        assert np.allclose(boxes, want["boxes"].numpy(), atol=1e-3)
        assert np.allclose(masks, want["masks"].numpy(), atol=1e-4)
