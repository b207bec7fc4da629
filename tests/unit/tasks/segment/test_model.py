"""Segmentation models, loss, metrics, evaluate/report pieces, predict, serve and export
(SEG-MODEL's half of tasks/segment): synthetic tensors and tiny models, CPU only."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from xvhpc.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from xvhpc.models.bundle import Bundle
from xvhpc.spec.schema import ModelSpec
from xvhpc.tasks.segment import models as seg_models
from xvhpc.tasks.segment.metrics import IGNORE, confusion, hd95, scores, segmentation_metrics
from xvhpc.tasks.segment.train import dice_loss, joint_augment, pixel_weights

# ------------------------------------------------------------------ models


@pytest.mark.parametrize(
    "arch", ["unet_tiny", *(a for a in seg_models.WEIGHTS if not a.startswith("maskrcnn"))]
)
def test_every_arch_gives_logits_at_the_input_size(arch: str) -> None:
    model = seg_models.build_segmenter(ModelSpec(arch=arch, pretrained="none"), 3, 64).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3, 64, 64)


def test_unet_tiny_takes_odd_sizes_and_refuses_imagenet() -> None:
    model = seg_models.UNetTiny(4)
    assert model(torch.randn(1, 3, 37, 50)).shape == (1, 4, 37, 50)
    with pytest.raises(ValueError, match="no pretrained"):
        seg_models.build_segmenter(ModelSpec(arch="unet_tiny", pretrained="imagenet"), 2, 32)


@pytest.mark.parametrize(
    ("arch", "classifier"),
    [
        ("fcn_resnet50", "resnet50"),
        ("lraspp_mobilenet_v3_large", "mobilenet_v3_large"),
        ("unet_resnet34", "resnet34"),
    ],
)
def test_imagenet_loads_every_backbone_tensor(monkeypatch, arch: str, classifier: str) -> None:
    """The cached ImageNet classifier (here: a random one of the same architecture) fills the
    whole backbone under the segmenter's names; nothing else is touched."""
    import torchvision.models as tvm

    torch.manual_seed(0)
    state = getattr(tvm, classifier)(weights=None).state_dict()
    monkeypatch.setattr(seg_models, "load_cached_state_dict", lambda a: state)
    model = seg_models.build_segmenter(ModelSpec(arch=arch, pretrained="imagenet"), 3, 64)
    own = model.state_dict()
    backbone = [k for k in own if k.startswith(("net.backbone.", "encoder."))]
    mapped = seg_models._backbone_state(arch, state)
    assert backbone and set(backbone) <= set(mapped)
    for key in backbone:
        assert torch.equal(own[key], mapped[key]), key


# ------------------------------------------------------------------ loss, augmentation


def test_soft_dice_is_zero_for_a_perfect_answer_and_ignores_255() -> None:
    soft_dice_loss = dice_loss()  # MONAI's masked Dice behind the ignore index
    target = torch.randint(0, 3, (2, 16, 16))
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert float(soft_dice_loss(perfect, target)) < 1e-3
    wrong = perfect.roll(1, dims=1)
    assert float(soft_dice_loss(wrong, target)) > 0.9
    ignored = target.clone()
    ignored[:, :8] = IGNORE  # wrong logits where the truth is ignored change nothing
    mixed = perfect.clone()
    mixed[:, :, :8] = wrong[:, :, :8]
    assert float(soft_dice_loss(mixed, ignored)) < 1e-3


def test_joint_augment_moves_the_mask_with_the_image() -> None:
    """Masks drawn from the image's own bright pixels stay the thresholded image after the
    online flip (the brightness jitter moves every pixel of an image alike)."""
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(4, 3, 12, 10, generator=g)
        masks = (x[:, 0] > 0.5).long()
        ax, am = joint_augment(x, masks, torch.Generator().manual_seed(seed))
        shift = ax[:, 0] - x[:, 0].flip(2)
        flipped = torch.isclose(shift, shift[:, :1, :1], atol=1e-6).flatten(1).all(1)
        for n in range(4):
            base = x[n, 0].flip(1) if flipped[n] else x[n, 0]
            assert torch.equal(am[n], (base > 0.5).long())


# ------------------------------------------------------------------ metrics


def test_confusion_leaves_out_ignored_pixels() -> None:
    truth = np.array([[0, 1, 255], [2, 2, 1]])
    found = np.array([[0, 2, 1], [2, 0, 1]])
    cm = confusion(truth, found, 3)
    assert cm.sum() == 5 and cm.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]


def test_scores_by_hand() -> None:
    cm = np.array([[8, 2], [1, 4]])  # IoU: 8/11, 4/7; Dice: 16/19, 8/11
    s = scores(cm)
    assert np.allclose(s["iou"], [8 / 11, 4 / 7]) and np.allclose(s["dice"], [16 / 19, 8 / 11])
    assert np.isclose(s["miou"], (8 / 11 + 4 / 7) / 2)
    assert np.isclose(s["pixel_accuracy"], 12 / 15)
    absent = scores(np.array([[5, 0, 0], [0, 3, 0], [0, 0, 0]]))  # class 2 nowhere: not averaged
    assert np.isnan(absent["iou"][2]) and absent["miou"] == 1.0


def test_metrics_json_shape_and_intervals_bracket_the_value() -> None:
    rng = np.random.default_rng(0)
    per_image = []
    for _ in range(30):
        truth = rng.integers(0, 3, (16, 16))
        found = np.where(rng.random((16, 16)) < 0.8, truth, rng.integers(0, 3, (16, 16)))
        per_image.append(confusion(truth, found, 3))
    m = segmentation_metrics(np.stack(per_image), ["bg", "a", "b"], resamples=500, seed=1)
    for key in ("miou", "dice", "pixel_accuracy"):
        assert m[key]["ci_low"] <= m[key]["value"] <= m[key]["ci_high"], key
    assert set(m["per_class_iou"]) == {"bg", "a", "b"} == set(m["per_class_dice"])
    assert np.sum(m["confusion"]) == m["pixels"] == 30 * 256 and m["images"] == 30
    grouped = segmentation_metrics(np.stack(per_image), ["bg", "a", "b"], ["p1", "p2"] * 15, 200)
    assert grouped["miou"]["value"] == m["miou"]["value"]  # groups change intervals only
    none = segmentation_metrics(np.stack(per_image), ["bg", "a", "b"], resamples=0)
    assert none["miou"]["ci_low"] is None and none["miou"]["value"] is not None


def test_hd95_by_hand_undefined_and_ignored() -> None:
    truth = np.zeros((20, 20), np.int64)
    truth[5:10, 5:10] = 1
    found = np.zeros_like(truth)
    found[5:10, 8:13] = 1  # the same square moved 3 px right: every boundary distance ≤ 3
    d = hd95(truth, found, 3)
    assert 0 < d[1] <= 3.0 + 1e-6 and np.isnan(d[2])  # class 2 nowhere: undefined, not 0
    assert hd95(truth, truth, 3)[1] == 0.0
    ignored = truth.copy()
    ignored[:, 10:] = 255  # the prediction's overflow lands in ignored pixels: it counts nowhere
    moved = truth.copy()
    moved[5:10, 12:15] = 1
    assert hd95(ignored, moved, 3)[1] == 0.0


def test_hd95_intervals_in_metrics_json() -> None:
    rng = np.random.default_rng(3)
    per_image, distances = [], []
    for _ in range(20):
        truth = np.zeros((24, 24), np.int64)
        x = int(rng.integers(4, 12))
        truth[6:16, x : x + 8] = 1
        shift = int(rng.integers(0, 4))
        found = np.roll(truth, shift, axis=1)
        per_image.append(confusion(truth, found, 2))
        distances.append(hd95(truth, found, 2))
    m = segmentation_metrics(
        np.stack(per_image), ["bg", "lung"], resamples=300, distances=np.stack(distances)
    )
    hd = m["hd95"]
    assert hd["ci_low"] <= hd["value"] <= hd["ci_high"] <= 3.0 + 1e-6
    assert np.isclose(hd["value"], np.mean(np.stack(distances)[:, 1]))  # mean over images
    assert set(m["per_class_hd95"]) == {"bg", "lung"}


# ------------------------------------------------------------------ predict, serve, export

THRESHOLD = 128


class Threshold(nn.Module):
    """Class 1 where the gray value is above THRESHOLD (logits: its distance, scaled)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cut = (THRESHOLD / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
        one = (x[:, :1] - cut) * 20
        return torch.cat([torch.zeros_like(one), one], 1)


def _bundle(model: nn.Module, resize: str = "squash", size: int = 24) -> Bundle:
    meta = {
        "classes": ["background", "bright"],
        "image_size": size,
        "channels": 1,
        "resize": resize,
        "tile_grid": 2,
        "arch": "unet_tiny",
    }
    return Bundle(model.eval(), meta, torch.device("cpu"))


def _blocky(seed: int, width: int = 48, height: int = 40) -> np.ndarray:
    """A gray image of 8-pixel blocks, each dark (40) or bright (200)."""
    rng = np.random.default_rng(seed)
    blocks = rng.choice([40, 200], size=(height // 8 + 1, width // 8 + 1))
    return np.kron(blocks, np.ones((8, 8)))[:height, :width].astype(np.uint8)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("resize", ["squash", "letterbox", "center_crop", "tile"])
def test_the_mask_comes_back_in_the_input_s_pixels(resize: str) -> None:
    """Every resize mode: the mask has the uploaded image's size and matches the thresholded
    image (block edges may blur by a pixel); a center crop leaves the sides unpredicted."""
    from xvhpc.tasks.segment.predict import segment_image

    for seed in range(3):
        image = _blocky(seed)
        mask = segment_image(_bundle(Threshold(), resize), _png(image), "x.png")
        assert mask.shape == image.shape
        truth = (image > THRESHOLD).astype(np.uint8)
        if resize == "center_crop":
            assert (mask[:, :4] == IGNORE).all() and (mask[:, -4:] == IGNORE).all()
            truth, mask = truth[:, 4:-4], mask[:, 4:-4]
        assert set(np.unique(mask)) <= {0, 1}
        assert (mask == truth).mean() > 0.93, (resize, seed, (mask == truth).mean())


def test_serve_gives_areas_a_png_mask_and_rle() -> None:
    from pycocotools import mask as coco_mask

    from xvhpc.tasks.segment.predict import segment_image, serve_response

    image = _blocky(1)
    bundle = _bundle(Threshold())
    reply = serve_response(bundle, _png(image), "x.png")
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["mask"]))))
    assert np.array_equal(mask, segment_image(bundle, _png(image), "x.png"))
    for k, name in enumerate(bundle.classes):
        area = reply["areas"][name]
        assert area["pixels"] == int((mask == k).sum())
        assert area["fraction"] == pytest.approx((mask == k).mean(), abs=1e-6)
        code = dict(reply["mask_rle"][name], counts=reply["mask_rle"][name]["counts"].encode())
        assert np.array_equal(coco_mask.decode(code), (mask == k).astype(np.uint8))
    assert {p["label"] for p in reply["predictions"]} == {"background", "bright"}
    assert "heatmap" not in reply  # drawn only on request


def test_serve_draws_the_mask_over_the_image_on_request() -> None:
    from xvhpc.tasks.segment.predict import serve_response

    image = _blocky(4)
    reply = serve_response(_bundle(Threshold()), _png(image), "x.png", heatmap=True)
    drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["heatmap"]))).convert("RGB"))
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["mask"]))))
    assert drawn.shape[:2] == image.shape and reply["heatmap_label"] == "mask"
    tinted = (drawn[:, :, 0] != drawn[:, :, 1]) | (drawn[:, :, 1] != drawn[:, :, 2])
    assert np.array_equal(tinted, mask == 1)  # exactly the bright class's pixels are coloured
    plain = mask == 0
    assert np.array_equal(drawn[plain][:, 0], image[plain])  # the rest is the image itself


def test_predict_rows_chunk_rows_and_merge(tmp_path: Path) -> None:
    from xvhpc.tasks.segment.predict import chunk_rows, merge_rows, predict_rows

    (tmp_path / "in").mkdir()
    good = tmp_path / "in" / "a.png"
    good.write_bytes(_png(_blocky(2)))
    bad = tmp_path / "in" / "b.png"
    bad.write_bytes(b"not an image")
    items = [{"path": str(good), "rel": "a.png"}, {"path": str(bad), "rel": "b.png"}]
    out = tmp_path / "out"
    out.mkdir()
    bundle = _bundle(Threshold())
    text, done, skipped = predict_rows(bundle, items, out)
    assert (done, skipped) == (1, 1)
    saved = np.asarray(Image.open(out / "masks" / "a.png.png"))
    assert saved.shape == (40, 48)
    assert chunk_rows(text, items) == (["a.png", "b.png"], ["a.png", "b.png"])
    (out / "chunk.csv").write_text(text)
    job = SimpleNamespace(
        model="m", source="s", chunks=1, skipped=[{"path": "c.dcm", "reason": "r"}]
    )
    merge_rows(out, [out / "chunk.csv"], job, bundle.meta, logging.getLogger("t"))  # type: ignore[arg-type]
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0].startswith("path,mask,background_pixels,background_fraction,bright_pixels")
    assert [line.split(",")[0] for line in lines[1:]] == ["a.png", "b.png", "c.dcm"]
    row = lines[1].split(",")
    assert int(row[2]) + int(row[4]) == 40 * 48


def test_export_torchscript_and_onnx_give_the_logits(tmp_path: Path) -> None:
    import json

    import onnxruntime as ort

    from xvhpc.tasks.segment.export import export_segmenter

    torch.manual_seed(0)
    bundle = _bundle(seg_models.UNetTiny(3), size=32)
    bundle.meta.update(classes=["a", "b", "c"], spec={}, preprocessing=None)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = bundle.model(x).numpy()
    ts = export_segmenter(bundle, "torchscript", tmp_path / "m.pt")
    assert np.allclose(torch.jit.load(str(ts))(x).detach().numpy(), want, atol=1e-5)
    onnx = export_segmenter(bundle, "onnx", tmp_path / "m.onnx")
    got = ort.InferenceSession(str(onnx)).run(None, {"image": x.numpy()})[0]
    assert np.allclose(got, want, atol=1e-4)
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    assert sidecar["task"] == "segment" and sidecar["classes"] == ["a", "b", "c"]


def test_report_section_shows_figures_table_and_samples(tmp_path: Path) -> None:
    from xvhpc.tasks.segment.evaluate import side_by_side
    from xvhpc.tasks.segment.report import report_section

    image = np.repeat(_blocky(0)[:, :, None], 1, axis=2)
    truth = (image[:, :, 0] > THRESHOLD).astype(np.uint8)
    (tmp_path / "samples").mkdir()
    side_by_side(image, truth, truth).save(tmp_path / "samples" / "0.png")
    m = segmentation_metrics(np.stack([confusion(truth, truth, 2)] * 3), ["bg", "x"], resamples=50)
    m.update(point=0, unit="image", classes=["bg", "x"], samples=["samples/0.png"])
    section = report_section(tmp_path, m)
    assert "mIoU 1.000" in section and "<td>x</td>" in section and "data:image/png" in section


def test_validate_agrees_with_evaluate_s_figures() -> None:
    """validate's val_miou/val_dice (one confusion matrix summed over batches and ranks) equal
    evaluate's point estimates over the same images; val_loss is finite."""
    from xvhpc.tasks.segment.train import validate_segmenter

    rng = np.random.default_rng(3)
    images = [_blocky(int(s))[:, :, None] for s in rng.integers(0, 100, 7)]
    items = []
    for image in images:
        mask = (image[:, :, 0] > THRESHOLD).astype(np.int64)
        noise = rng.random(mask.shape) < 0.1  # some pixels the threshold gets wrong
        mask[noise] = 1 - mask[noise]
        mask[:2] = IGNORE
        items.append((torch.from_numpy(image), torch.from_numpy(mask)))
    ctx = SimpleNamespace(rank=0, world_size=1, device=torch.device("cpu"), backend="gloo")
    model = Threshold()
    got = validate_segmenter(model, items, ctx, 3, ["background", "bright"])  # type: ignore[arg-type]
    per_image = []
    for image, mask in items:
        found = (image[:, :, 0].numpy() > THRESHOLD).astype(np.int64)
        per_image.append(confusion(mask.numpy(), found, 2))
    want = segmentation_metrics(np.stack(per_image), ["background", "bright"], resamples=0)
    assert got["val_miou"] == pytest.approx(want["miou"]["value"])
    assert got["val_dice"] == pytest.approx(want["dice"]["value"])
    assert got["val_samples"] == 7 and np.isfinite(got["val_loss"])


class _Masks:
    """Just what ``pixel_weights`` reads of a SegmentationDataset: ``len`` and ``masks``."""

    def __init__(self, masks: np.ndarray):
        self._masks = masks

    def __len__(self) -> int:
        return len(self._masks)

    def masks(self, idx: np.ndarray) -> np.ndarray:
        return self._masks[idx]


def test_pixel_weights_favour_rare_classes_and_skip_ignored_pixels() -> None:
    masks = np.zeros((5, 10, 10), np.uint8)
    masks[:, :2, :5] = 1  # class 1: 10 % of the pixels, class 0: 70 %, class 2: none
    masks[:, 8:, :] = IGNORE  # 20 % ignored: counted for no class
    w = pixel_weights(_Masks(masks), 3, chunk=2)  # type: ignore[arg-type]
    assert w.shape == (3,) and abs(float(w.mean()) - 1) < 1e-6
    assert float(w[1]) > float(w[0])  # the rare class weighs more (median frequency: 0.7/0.1 x)
    assert abs(float(w[1] / w[0]) - 7.0) < 1e-4
    # no pixel of class 2: weight 1 before scaling, class 0: median 0.5 / frequency 7/8
    assert abs(float(w[2] / w[0]) - 1 / (0.5 / (7 / 8))) < 1e-4
