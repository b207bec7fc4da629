"""Hostile uploads, second pass (issue 23, finding 12): the cap holds while the body streams.

The ASGI application is driven directly with real ``receive``/``send`` callables (what
uvicorn does), so the test sees exactly how many body bytes the server pulled in; and a real
TestClient for the temp-disk case. No mocks, no timed assertions. And (issue 11, case 5) the
DICOM bomb and a huge sparse PNG's heatmap, and the deployed threshold as the default."""

from __future__ import annotations

import asyncio
import base64
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.hostile import deflated_dicom, gradient, png_bytes

CHUNK = 1 << 20
BOUNDARY = b"xvhpcboundary"


def _app(bundle_dir: Path, max_upload_mb: float):  # noqa: F811
    from xvhpc.models.bundle import load_bundle
    from xvhpc.serve.app import create_app

    return create_app(load_bundle(bundle_dir), max_upload_mb=max_upload_mb)


def _post(app, chunks: int, length: int | None = None) -> tuple[int, bytes, int]:
    """POST /v1/predict with a multipart body of ``chunks`` MiB of file bytes, streamed
    (chunked unless ``length`` is given); (status, body, MiB chunks the app pulled in)."""
    head = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="x.png"'
        b"\r\nContent-Type: image/png\r\n\r\n"
    )
    headers = [(b"content-type", b"multipart/form-data; boundary=" + BOUNDARY)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        if pulled == 0:
            pulled = 1
            return {"type": "http.request", "body": head, "more_body": True}
        if pulled <= chunks:
            pulled += 1
            return {"type": "http.request", "body": bytes(CHUNK), "more_body": True}
        if pulled == chunks + 1:
            pulled += 1
            return {"type": "http.request", "body": b"\r\n--" + BOUNDARY + b"--\r\n"}
        await asyncio.sleep(3600)  # the client went quiet: never reached by a capped app
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, max(0, pulled - 1)


@pytest.mark.timeout(120)
def test_chunked_upload_over_the_cap_is_cut_off_while_it_streams(bundle_dir: Path) -> None:  # noqa: F811
    status, body, pulled = _post(_app(bundle_dir, 1), chunks=64)
    assert status == 413 and b"upload larger than 1 MB" in body
    assert pulled <= 2, f"{pulled} MiB read of a body capped at 1 MB"


@pytest.mark.timeout(120)
def test_upload_over_the_cap_is_refused_on_its_content_length(bundle_dir: Path) -> None:  # noqa: F811
    status, body, pulled = _post(_app(bundle_dir, 1), chunks=64, length=64 * CHUNK + 500)
    assert status == 413 and b"upload larger than 1 MB" in body
    assert pulled == 0  # not one byte of the body was read


@pytest.mark.timeout(120)
def test_valid_upload_does_not_need_the_temp_disk(
    bundle_dir: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
) -> None:
    """A full or missing temp dir: a valid 3 MB PNG is still served (was 400 'error parsing
    the body')."""
    from fastapi.testclient import TestClient

    pixels = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)
    assert len(buf.getvalue()) > 2 << 20
    client = TestClient(_app(bundle_dir, 32))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp-dir"))
    response = client.post("/v1/predict", files={"file": ("x.png", buf.getvalue())})
    assert response.status_code == 200, response.text


@pytest.mark.timeout(120)
def test_serve_refuses_the_dicom_bomb(client, tmp_path: Path) -> None:
    bomb = deflated_dicom(tmp_path / "bomb.dcm", 400, 1000, 1000).read_bytes()
    response = client.post("/v1/predict", files={"file": ("x.dcm", bomb)})
    assert response.status_code == 415 and "bomb" in response.json()["detail"]


@pytest.mark.timeout(120)
def test_serve_heatmap_is_bounded_for_a_huge_sparse_png(client) -> None:
    huge = png_bytes(np.zeros((2000, 3000), np.uint8), mode="1")
    assert len(huge) < 20_000
    response = client.post("/v1/predict", files={"file": ("x.png", huge)}, data={"heatmap": "true"})
    assert response.status_code == 200
    overlay = Image.open(io.BytesIO(base64.b64decode(response.json()["heatmap"])))
    assert overlay.size == (1024, 683)  # the input's shape, at most 1024 px a side


@pytest.mark.timeout(60)
def test_serve_applies_the_deployed_threshold_by_default(client) -> None:
    assert client.get("/v1/model").json()["default_threshold"] == 0.9
    image = png_bytes(gradient(64, 64))
    deployed = client.post("/v1/predict", files={"file": ("x.png", image)}).json()
    asked = client.post(
        "/v1/predict", files={"file": ("x.png", image)}, data={"threshold": "0"}
    ).json()
    assert len(asked["predictions"]) == 3  # the request's value overrides the deployed one
    assert all(p["confidence"] >= 0.9 for p in deployed["predictions"])
    assert len(deployed["predictions"]) < 3
