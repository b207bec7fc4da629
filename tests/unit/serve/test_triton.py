"""``xvhpc export --format triton``: the ONNX model reproduces PyTorch and config.pbtxt parses
under Triton's own model-config protobuf schema (shipped by the tritonclient package)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format

from tests.conftest import xv
from xvhpc.models.bundle import load_bundle


def triton_model_config() -> ModuleType:
    """tritonclient's ``model_config_pb2``, loaded from its file: importing the package
    ``tritonclient.grpc`` would also need grpcio, which the schema itself does not."""
    spec = importlib.util.find_spec("tritonclient")
    assert spec is not None and spec.submodule_search_locations, "pip install tritonclient"
    path = Path(spec.submodule_search_locations[0]) / "grpc" / "model_config_pb2.py"
    loader = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def repo(trained_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton")
    xv("export", str(trained_run), "--format", "triton", "--out", str(out))
    (model,) = [p for p in out.iterdir() if p.is_dir()]
    return model


@pytest.fixture(scope="module")
def config(repo: Path):
    pb = triton_model_config()
    return text_format.Parse((repo / "config.pbtxt").read_text(), pb.ModelConfig())


def test_repository_layout(repo: Path, trained_run: Path) -> None:
    bundle = load_bundle(trained_run / "model")
    assert (repo / "1" / "model.onnx").is_file()
    assert (repo / "labels.txt").read_text().splitlines() == bundle.classes
    record = json.loads((repo / "preprocessing.json").read_text())
    assert record["preprocessing"]["image_size"] == bundle.size
    assert record["preprocessing"]["resize"] == bundle.meta["preprocessing"]["resize"]
    assert record["output"]["classes"] == bundle.classes


def test_config_validates_against_triton_schema(repo: Path, config, trained_run: Path) -> None:
    pb = triton_model_config()
    bundle = load_bundle(trained_run / "model")
    assert config.name == repo.name  # Triton requires the directory's name
    assert config.backend == "onnxruntime"
    assert config.max_batch_size >= 8
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    (inp,) = config.input
    (out,) = config.output
    assert inp.data_type == pb.TYPE_FP32 and list(inp.dims) == [3, bundle.size, bundle.size]
    assert out.data_type == pb.TYPE_FP32 and list(out.dims) == [len(bundle.classes)]
    assert out.label_filename == "labels.txt"
    session = ort.InferenceSession(str(repo / "1" / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == [inp.name]
    assert [o.name for o in session.get_outputs()] == [out.name]
    assert session.get_inputs()[0].shape[1:] == list(inp.dims)


def test_schema_refuses_a_wrong_field(repo: Path) -> None:
    """The check above can fail: a field Triton does not know is a parse error."""
    pb = triton_model_config()
    text = (repo / "config.pbtxt").read_text().replace("max_batch_size", "max_batchsize")
    with pytest.raises(text_format.ParseError):
        text_format.Parse(text, pb.ModelConfig())


def test_onnx_reproduces_pytorch(repo: Path, trained_run: Path, demo_data: Path) -> None:
    bundle = load_bundle(trained_run / "model")
    files = sorted(p for p in demo_data.rglob("*") if p.is_file())[:5]
    x = torch.cat([bundle.inputs(f, f.name) for f in files])
    with torch.no_grad():
        expected = torch.softmax(bundle.model(x), dim=1).numpy()
    session = ort.InferenceSession(str(repo / "1" / "model.onnx"))
    got = session.run(None, {"image": x.numpy()})[0]
    assert got.shape == expected.shape == (5, len(bundle.classes))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    single = session.run(None, {"image": x[:1].numpy()})[0]  # dynamic batch: one image too
    np.testing.assert_allclose(single, expected[:1], atol=1e-4, rtol=0)
