"""Evaluate, report (in a real browser), REST serving with threshold and heatmap, export parity."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from PIL import Image

from tests.conftest import require, xv
from xvhpc.data.synth import write_dicom, xray
from xvhpc.models.bundle import load_bundle
from xvhpc.serve.app import create_app


@pytest.fixture(scope="module")
def bundle(trained_run: Path):
    return load_bundle(trained_run / "model")


@pytest.fixture(scope="module")
def client(bundle) -> TestClient:
    return TestClient(create_app(bundle, max_upload_mb=1))


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, tuple[bytes, tuple[int, int]]]:
    """A JPEG, a PNG and a DICOM X-ray (with their width, height)."""
    folder = tmp_path_factory.mktemp("samples")
    rng = np.random.default_rng(9)
    out = {}
    jpg = io.BytesIO()
    Image.fromarray(xray("covid19", 90, rng)).resize((120, 90)).save(jpg, format="JPEG")
    out["x.jpg"] = (jpg.getvalue(), (120, 90))
    png = io.BytesIO()
    Image.fromarray(xray("normal", 70, rng)).save(png, format="PNG")
    out["x.png"] = (png.getvalue(), (70, 70))
    write_dicom(folder / "x.dcm", xray("bacterial", 80, rng))
    out["x.dcm"] = ((folder / "x.dcm").read_bytes(), (80, 80))
    return out


def test_evaluate_metrics_written(trained_run: Path) -> None:
    m = json.loads((trained_run / "eval" / "0" / "metrics.json").read_text())
    assert set(m) >= {
        "accuracy",
        "balanced_accuracy",
        "per_class",
        "confusion_matrix",
        "roc_auc",
        "macro_f1",
    }
    assert set(m["per_class"]) == {"bacterial", "covid19", "normal", "viral"}
    assert all({"precision", "recall", "f1", "support"} <= set(v) for v in m["per_class"].values())
    board = json.loads((trained_run / "eval" / "leaderboard.json").read_text())
    assert board["rows"][0]["point"] == 0


def test_evaluate_on_a_labelled_folder(trained_run: Path, demo_data: Path) -> None:
    xv("evaluate", "--run-dir", str(trained_run), "--data", str(demo_data))
    m = json.loads((trained_run / "eval" / "0" / f"metrics-{demo_data.name}.json").read_text())
    assert m["samples"] == 48 and m["data"] == str(demo_data)


@pytest.mark.parametrize("name", ["x.jpg", "x.png", "x.dcm"])
def test_predict_each_format_threshold_zero_returns_all(
    client: TestClient, samples, name: str
) -> None:
    data, (w, h) = samples[name]
    r = client.post(
        "/v1/predict", files={"file": (name, data)}, data={"threshold": "0", "heatmap": "true"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    confidences = [p["confidence"] for p in body["predictions"]]
    assert len(confidences) == 4 and confidences == sorted(confidences, reverse=True)
    assert abs(sum(confidences) - 1) < 1e-4
    heat = Image.open(io.BytesIO(base64.b64decode(body["heatmap"])))
    assert heat.format == "PNG" and heat.size == (w, h)


def test_threshold_semantics(client: TestClient, samples) -> None:
    data = samples["x.jpg"][0]
    all_ = client.post(
        "/v1/predict", files={"file": ("a.jpg", data)}, data={"threshold": "0"}
    ).json()["predictions"]
    top = all_[0]["confidence"]
    mid = client.post(
        "/v1/predict", files={"file": ("a.jpg", data)}, data={"threshold": str(top - 1e-6)}
    ).json()["predictions"]
    assert [p["label"] for p in mid] == [all_[0]["label"]]
    one = client.post(
        "/v1/predict", files={"file": ("a.jpg", data)}, data={"threshold": "1"}
    ).json()["predictions"]
    assert one == ([] if top < 1.0 else all_[:1])
    k = client.post("/v1/predict", files={"file": ("a.jpg", data)}, data={"top_k": "2"}).json()[
        "predictions"
    ]
    assert len(k) == 2


def test_bad_requests_are_4xx(client: TestClient) -> None:
    assert (
        client.post("/v1/predict", files={"file": ("a.jpg", b"\x00garbage" * 10)}).status_code
        == 415
    )
    assert client.post("/v1/predict", files={"file": ("a.jpg", b"")}).status_code == 415
    assert (
        client.post(
            "/v1/predict", files={"file": ("a.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 20)}
        ).status_code
        == 415
    )
    assert (
        client.post(
            "/v1/predict", files={"file": ("a.jpg", b"x")}, data={"threshold": "1.5"}
        ).status_code
        == 422
    )
    assert (
        client.post(
            "/v1/predict", files={"file": ("big.jpg", b"\xff\xd8\xff" + b"\0" * (1024 * 1024 + 10))}
        ).status_code
        == 413
    )
    assert client.post("/v1/predict").status_code == 422
    model = client.get("/v1/model").json()
    assert (
        model["classes"] == ["bacterial", "covid19", "normal", "viral"]
        and model["image_size"] == 32
    )
    assert client.get("/healthz").json() == {"status": "ok"}


def test_api_fuzzing_no_server_errors(bundle) -> None:
    """Property-based requests generated from the OpenAPI schema (schemathesis): never a 5xx."""
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(bundle, max_upload_mb=1))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/model", "/healthz"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            response = case.call()
            assert response.status_code < 500, (case.path, response.text)

        check()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sixteen_concurrent_clients_real_server(trained_run: Path, samples) -> None:
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [*xv_argv(), "serve", str(trained_run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        files = list(samples.items())

        def call(i: int) -> int:
            name, (data, _) = files[i % len(files)]
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/predict",
                files={"file": (name, data)},
                data={"heatmap": "true" if i % 4 == 0 else "false"},
                timeout=120,
            )
            return r.status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(call, range(64)))
        assert codes == [200] * 64
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def xv_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "xvhpc"]


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_pytorch(
    trained_run: Path, bundle, samples, fmt: str, tmp_path: Path
) -> None:
    import torch

    out = tmp_path / f"model.{fmt}"
    xv("export", str(trained_run), "--format", fmt, "--out", str(out))
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["classes"] == bundle.classes and sidecar["preprocessing"]["image_size"] == 32
    x = torch.cat([bundle.inputs(data, name) for name, (data, _) in samples.items()])
    with torch.no_grad():
        expected = bundle.model(x).numpy()
    if fmt == "torchscript":
        got = torch.jit.load(str(out))(x).detach().numpy()
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4


def test_report_renders_in_chromium(trained_run: Path, tmp_path: Path) -> None:
    require("chromium", "report rendering in a real browser")
    report = trained_run / "report.html"
    assert report.exists()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run(
        ["chromium", *flags, "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    total = re.search(r'data-images="(\d+)"', dom)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    assert total and loaded, dom[:500]
    assert int(total.group(1)) >= 4 and loaded.group(1) == total.group(1), (
        "an embedded image did not load"
    )
    shot = tmp_path / "shot.png"
    subprocess.run(
        ["chromium", *flags, "--window-size=1200,1600", f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10, "blank screenshot"
    shutil.copy(shot, trained_run / "report-screenshot.png")
