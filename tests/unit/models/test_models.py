"""Model bundles: preprocessing carried from the manifest, and model files that are never
unpickled (evaluate, serve and export refuse a pickle payload or a corrupt file by name)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import tiny_spec, xv
from tests.payload import payload_is_live, write_payload
from xvhpc.data.decode import BadImage
from xvhpc.models.bundle import load_bundle, publish_model, save_bundle
from xvhpc.models.safeload import UnloadableFile, load_tensors
from xvhpc.models.zoo import build_model
from xvhpc.spec import load_spec

CLASSES = ["bacterial", "covid19", "normal", "viral"]
PREPROCESSING = {  # as ingest writes it into manifest.json; two values away from the defaults
    "image_size": 32,
    "channels": 1,
    "resize": "letterbox",
    "tile_grid": 2,
    "max_image_pixels": 50 * 50,
    "dicom_frames": "all",
}


@pytest.fixture(scope="module")
def bundle_run(tmp_path_factory, demo_data: Path) -> Path:
    """A compiled run dir holding a real (untrained) resnet18 bundle at train/0/model and model/."""
    work = tmp_path_factory.mktemp("bundle")
    spec_path = tiny_spec(work / "spec.yaml", demo_data)
    xv("compile", str(spec_path), "--out", str(work / "run"))
    run = work / "run"
    spec = load_spec(run / "spec.yaml").spec
    model = build_model(spec.model, len(CLASSES))
    save_bundle(run / "train" / "0" / "model", model, spec, CLASSES, PREPROCESSING, 1, {})
    publish_model(run, 0)
    return run


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width), 128, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_bundle_stores_the_manifests_preprocessing_unchanged(bundle_run: Path) -> None:
    meta = json.loads((bundle_run / "model" / "meta.json").read_text())
    assert meta["preprocessing"] == PREPROCESSING
    opts = load_bundle(bundle_run / "model").decode_options
    assert opts.max_pixels == PREPROCESSING["max_image_pixels"]
    assert opts.dicom_frames == "all"
    assert (opts.size, opts.channels, opts.resize) == (32, 1, "letterbox")


def test_bundle_inputs_apply_the_ingest_pixel_guard(bundle_run: Path) -> None:
    """New images in evaluate/serve meet the same max_image_pixels as the training images."""
    bundle = load_bundle(bundle_run / "model")
    assert bundle.inputs(png(50, 50), "ok.png").shape == (1, 3, 32, 32)
    with pytest.raises(BadImage):
        bundle.inputs(png(51, 50), "big.png")


def test_load_tensors_refuses_a_payload_without_running_it(tmp_path: Path) -> None:
    assert payload_is_live(tmp_path), (
        "the payload must run when unpickled, or this test proves nothing"
    )
    path = write_payload(tmp_path / "weights.pt", tmp_path / "marker")
    with pytest.raises(UnloadableFile, match=r"weights\.pt: refused: .*io\.open"):
        load_tensors(path)
    assert not (tmp_path / "marker").exists()


def test_load_tensors_reads_a_state_dict(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2), "n": 3}, tmp_path / "state.pt")
    state = load_tensors(tmp_path / "state.pt")
    assert torch.equal(state["w"], torch.ones(2))
    assert state["n"] == 3


def copy_run(bundle_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(bundle_run, run)
    return run


def step_argv(step: str, run: Path) -> list[str]:
    """Each step that loads a bundle, run on ``run`` (serve fails before it would listen)."""
    return {
        "evaluate": ["evaluate", "--run-dir", str(run), "--point", "0"],
        "serve": ["serve", str(run), "--port", "1"],
        "export": ["export", str(run), "--format", "torchscript"],
    }[step]


def weights_for(step: str, run: Path) -> Path:
    """The weights file ``step`` reads: the point's bundle (evaluate) or the published one."""
    return run / ("train/0/model" if step == "evaluate" else "model") / "weights.pt"


@pytest.mark.parametrize("step", ["evaluate", "serve", "export"])
def test_pickle_payload_weights_are_refused(step: str, bundle_run: Path, tmp_path: Path) -> None:
    run = copy_run(bundle_run, tmp_path)
    marker = tmp_path / "marker"
    weights = write_payload(weights_for(step, run), marker)
    proc = xv(*step_argv(step, run), check=False)
    assert proc.returncode == 2
    assert f"xvhpc: error: {weights}: refused" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists(), "the weights were unpickled: the payload ran"


@pytest.mark.parametrize("step", ["evaluate", "serve", "export"])
def test_corrupt_weights_are_a_clear_error(step: str, bundle_run: Path, tmp_path: Path) -> None:
    run = copy_run(bundle_run, tmp_path)
    weights = weights_for(step, run)
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = xv(*step_argv(step, run), check=False)
    assert proc.returncode == 2
    assert f"xvhpc: error: {weights}: not a readable PyTorch file" in proc.stderr
    assert "Traceback" not in proc.stderr
