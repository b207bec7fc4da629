"""``xvhpc serve``: a FastAPI endpoint over a trained bundle, with threshold and Grad-CAM heatmap."""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from PIL import Image
from pydantic import BaseModel, Field

from ..data.decode import BadImage, decode
from ..models.bundle import Bundle, load_bundle, overlay_png
from ..stats.decision import DecisionError, decide, describe, read_decision
from .batching import MicroBatcher, forward
from .limits import FORM_SLACK, UploadCap, keep_uploads_in_memory


class Prediction(BaseModel):
    label: str
    confidence: float
    box: list[float] | None = Field(
        None, description="detection models: x0, y0, x1, y1 in the uploaded image's pixels"
    )


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    heatmap: str | None = Field(
        None, description="PNG overlay (base64) at the input image's size, at most 1024 px a side"
    )
    heatmap_label: str | None = None
    model: dict
    decision: str | None = Field(None, description="label under the model's decision rule")


class ModelInfo(BaseModel):
    arch: str
    classes: list[str]
    image_size: int
    channels: int
    validation: dict
    spec_hash: str
    default_threshold: float
    decision_rule: str = "most probable class"


def rank_predictions(
    probs, classes: list[str], threshold: float, top_k: int | None
) -> list[Prediction]:
    """Classes with confidence ≥ threshold, most confident first (threshold 0 → every class)."""
    ranked = sorted(zip(classes, (float(p) for p in probs), strict=True), key=lambda kv: -kv[1])
    kept = [Prediction(label=c, confidence=p) for c, p in ranked if p >= threshold]
    return kept[:top_k] if top_k else kept


HEATMAP_MAX_SIDE = 1024  # px: the overlay's longest side (the input's size when smaller)


def overlay_parts(bundle: Bundle, data: bytes, name: str, cam: np.ndarray):
    """(image, heatmap) for the overlay: the input decoded under the model's own pixel guard
    (data.max_image_pixels) and scaled to at most HEATMAP_MAX_SIDE, and the model-resolution
    Grad-CAM cropped to the part of the model input that shows the image (letterbox bars off).

    Never the input at full size: an 8 KB 8,000×8,000 1-bit PNG cost 4.9 GB that way."""
    opts = dataclasses.replace(
        bundle.decode_options, size=HEATMAP_MAX_SIDE, channels=3, resize="letterbox"
    )
    image = decode(data, opts, name=name)[0]  # a JPEG is decoded at reduced scale already
    height, width = image.shape[:2]
    if max(height, width) > HEATMAP_MAX_SIDE:
        scale = HEATMAP_MAX_SIDE / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        image = np.asarray(pil.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))
        height, width = image.shape[:2]
    if bundle.decode_options.resize == "letterbox":  # the map of the padded square: crop it
        side = cam.shape[0]
        scale = side / max(height, width)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        left, top = (side - w) // 2, (side - h) // 2
        cam = cam[top : top + h, left : left + w]
    return image, cam


SERVE_DECODE_MB = 1024  # per request: a node serves several at once (threads, --workers)


def serve_budget(bundle: Bundle, max_decode_mb: float) -> None:
    """Lower the bundle's decode byte budget to the server's: ingest may spend 4 GiB on one
    image, but a server decodes several uploads at once and a < 1 MB PNG can ask for GBs."""
    pre = bundle.meta.get("preprocessing")
    if pre is not None:
        budget = int(max_decode_mb * (1 << 20))
        pre["max_decode_bytes"] = min(int(pre.get("max_decode_bytes", budget)), budget)


def create_app(
    bundle: Bundle,
    max_upload_mb: float = 32.0,
    decision: dict | None = None,
    batcher: MicroBatcher | None = None,
    max_decode_mb: float = SERVE_DECODE_MB,
) -> FastAPI:
    serve_budget(bundle, max_decode_mb)
    meta = bundle.meta
    spec_hash = hashlib.sha256(json.dumps(meta["spec"], sort_keys=True).encode()).hexdigest()[:16]
    info = ModelInfo(
        arch=meta["arch"],
        classes=bundle.classes,
        image_size=bundle.size,
        channels=meta["channels"],
        validation=meta.get("validation", {}),
        spec_hash=spec_hash,
        default_threshold=meta.get("threshold", 0.0),
        decision_rule=describe(decision),
    )
    app = FastAPI(
        title="xvhpc model",
        version="1",
        description=f"{meta['arch']} {'detector' if meta['spec'].get('task') == 'detect' else 'classifier'}: {', '.join(bundle.classes)}",
    )
    limit = int(max_upload_mb * 1024 * 1024)
    app.add_middleware(UploadCap, limit=limit + FORM_SLACK, shown=f"{max_upload_mb:g} MB")
    keep_uploads_in_memory(limit + FORM_SLACK)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model", response_model=ModelInfo)
    def model_info() -> ModelInfo:
        return info

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses={
            413: {"description": "too large"},
            415: {"description": "not a supported image"},
            422: {"description": "bad parameters"},
        },
    )
    async def predict(
        file: Annotated[UploadFile, File(description="JPEG, PNG or DICOM")],
        threshold: Annotated[
            float | None,
            Form(ge=0.0, le=1.0, description="default: the deployed threshold (GET /v1/model)"),
        ] = None,
        top_k: Annotated[int | None, Form(ge=1, le=1000)] = None,
        heatmap: Annotated[bool, Form()] = False,
    ) -> PredictResponse:
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"upload larger than {max_upload_mb:g} MB")
        name = file.filename or ""
        if threshold is None:  # the request's value overrides the deployed one
            threshold = info.default_threshold
        return await asyncio.to_thread(_predict, data, name, threshold, top_k, heatmap)

    def _predict(
        data: bytes, name: str, threshold: float, top_k: int | None, want_heatmap: bool
    ) -> PredictResponse:
        if meta["spec"].get("task") == "detect":
            return _detect(data, name, threshold, top_k)
        try:
            x = bundle.inputs(data, name)
        except BadImage as exc:
            raise HTTPException(415, f"not a supported image: {exc}") from None
        probs = batcher.probabilities(x) if batcher else forward(bundle, x)  # same bits
        scaled, label = decide(probs.mean(0), bundle.classes, decision)
        probs, best = scaled[0], int(label[0])  # temperature, then the operating point
        response = PredictResponse(
            predictions=rank_predictions(probs, bundle.classes, threshold, top_k),
            model={"arch": info.arch, "spec_hash": spec_hash},
            decision=bundle.classes[best],
        )
        if want_heatmap:
            cam = bundle.heatmap(x, best)
            try:
                png = overlay_png(*overlay_parts(bundle, data, name, cam))
            except BadImage as exc:
                raise HTTPException(415, f"not a supported image: {exc}") from None
            response.heatmap = base64.b64encode(png).decode()
            response.heatmap_label = bundle.classes[best]
        return response

    def _detect(data: bytes, name: str, threshold: float, top_k: int | None) -> PredictResponse:
        """Boxes at or above the threshold, most confident first (no heatmap, no rule)."""
        from ..tasks.detect.predict import detect_image

        try:
            boxes = detect_image(bundle, data, name, threshold)
        except BadImage as exc:
            raise HTTPException(415, f"not a supported image: {exc}") from None
        return PredictResponse(
            predictions=[Prediction(**b) for b in boxes[:top_k]],
            model={"arch": info.arch, "spec_hash": spec_hash},
        )

    return app


def main(args: argparse.Namespace) -> int:
    import uvicorn

    run = Path(args.run_dir)
    model_dir = run / "model" if (run / "model").is_dir() else run
    try:
        bundle = load_bundle(model_dir)
        decision = read_decision(model_dir, bundle.classes)
    except (FileNotFoundError, DecisionError) as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
    deploy = bundle.meta["spec"].get("deploy", {})
    host = args.host or deploy.get("host", "127.0.0.1")
    port = args.port or deploy.get("port", 8000)
    max_batch, window_ms = getattr(args, "max_batch", 16), getattr(args, "batch_window_ms", 5.0)
    if getattr(args, "workers", 1) > 1:  # processes, each with its own model and batcher
        from .workers import serve_workers

        return serve_workers(model_dir, args.workers, host, port, max_batch, window_ms)
    batcher = MicroBatcher(bundle, max_batch, window_ms) if max_batch > 1 else None
    app = create_app(bundle, deploy.get("max_upload_mb", 32), decision, batcher)
    uvicorn.run(app, host=host, port=port, log_level="info")
    return 0
