"""``xvhpc serve``: a FastAPI endpoint over a trained bundle, with threshold and Grad-CAM heatmap.

Task-blind: the HTTP side (limits, form fields, status codes, the model card) is here; what an
upload's answer holds comes from the bundle's task (``Task.serve_response``). ``serve/main.py``
starts it (one process, or ``serve/workers.py``'s several)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from pydantic import BaseModel, Field

from ..data.decode import BadImage
from ..models.bundle import Bundle
from ..registry import load_task
from ..rundir.records import task_of
from ..stats.decision import describe
from .batching import MicroBatcher
from .limits import FORM_SLACK, UploadCap, keep_uploads_in_memory
from .tryit import add_tryit


class Prediction(BaseModel):
    label: str
    confidence: float
    box: list[float] | None = Field(
        None, description="detection models: x0, y0, x1, y1 in the uploaded image's pixels"
    )
    start: float | None = Field(None, description="action models: the segment's start (s)")
    end: float | None = Field(None, description="action models: the segment's end (s)")


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    heatmap: str | None = Field(
        None, description="PNG overlay (base64) at the input image's size, at most 1024 px a side"
    )
    heatmap_label: str | None = None
    model: dict
    decision: str | None = Field(None, description="label under the model's decision rule")
    areas: dict[str, dict[str, float]] | None = Field(
        None, description="segmentation models: each class's pixels and fraction of the image"
    )
    mask: str | None = Field(
        None,
        description="segmentation models: the label map as PNG (base64; pixel = class index, "
        "255 = not predicted) in the uploaded image's pixels",
    )
    mask_rle: dict[str, dict] | None = Field(
        None, description="segmentation models: COCO RLE {size, counts} of each class present"
    )
    instances: list[dict] | None = Field(
        None,
        description="instance segmentation (Mask R-CNN): each object's label, confidence, box "
        "and mask (COCO RLE) in the uploaded image's pixels",
    )


class ModelInfo(BaseModel):
    arch: str
    classes: list[str]
    image_size: int
    channels: int
    validation: dict
    spec_hash: str
    default_threshold: float
    decision_rule: str = "most probable class"


SERVE_DECODE_MB = 1024  # per request: a node serves several at once (threads, --workers)


def serve_budget(bundle: Bundle, max_decode_mb: float) -> None:
    """Lower the bundle's decode byte budget to the server's: ingest may spend 4 GiB on one
    image, but a server decodes several uploads at once and a < 1 MB PNG can ask for GBs."""
    pre = bundle.meta.get("preprocessing")
    if pre is not None:
        budget = int(max_decode_mb * (1 << 20))
        pre["max_decode_bytes"] = min(int(pre.get("max_decode_bytes", budget)), budget)


def model_card(bundle: Bundle, decision: dict | None) -> ModelInfo:
    """``GET /v1/model``: the architecture, classes, input, validation figures, the spec's
    hash and the deployed threshold and decision rule."""
    meta = bundle.meta
    spec_hash = hashlib.sha256(json.dumps(meta["spec"], sort_keys=True).encode()).hexdigest()
    return ModelInfo(
        arch=meta["arch"],
        classes=bundle.classes,
        image_size=bundle.size,
        channels=meta["channels"],
        validation=meta.get("validation", {}),
        spec_hash=spec_hash[:16],
        default_threshold=meta.get("threshold", 0.0),
        decision_rule=describe(decision),
    )


def create_app(
    bundle: Bundle,
    max_upload_mb: float = 32.0,
    decision: dict | None = None,
    batcher: MicroBatcher | None = None,
    max_decode_mb: float = SERVE_DECODE_MB,
) -> FastAPI:
    """The endpoint over ``bundle``: the HTTP limits and the model card here, each answer's
    fields from the bundle's task (so a new task needs no change to this file)."""
    serve_budget(bundle, max_decode_mb)
    task = load_task(task_of(bundle.meta))
    info = model_card(bundle, decision)
    app = FastAPI(
        title="xvhpc model",
        version="1",
        description=f"{info.arch} {task.noun}: {', '.join(bundle.classes)}",
    )
    limit = int(max_upload_mb * 1024 * 1024)
    app.add_middleware(UploadCap, limit=limit + FORM_SLACK, shown=f"{max_upload_mb:g} MB")
    keep_uploads_in_memory(limit + FORM_SLACK)
    add_tryit(app, info.model_dump(), task.noun, max_upload_mb)  # GET /: the try-it page

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model", response_model=ModelInfo)
    def model_info() -> ModelInfo:
        return info

    def answer(
        data: bytes, name: str, threshold: float, top_k: int | None, heat: bool
    ) -> PredictResponse:
        """The task's answer to one upload (in a worker thread: decode and model are blocking)."""
        probabilities = batcher.probabilities if batcher else None
        try:
            fields = task.serve_response(
                bundle, data, name, threshold, top_k, heat, decision, probabilities
            )
        except BadImage as exc:
            raise HTTPException(415, f"not a supported image: {exc}") from None
        predictions = [Prediction(**p) for p in fields.pop("predictions")]
        return PredictResponse(
            predictions=predictions,
            model={"arch": info.arch, "spec_hash": info.spec_hash},
            **fields,
        )

    add_predict(app, answer, limit, max_upload_mb, info.default_threshold)
    return app


def add_predict(
    app: FastAPI,
    answer: Callable[..., PredictResponse],
    limit: int,
    max_upload_mb: float,
    default_threshold: float,
) -> None:
    """``POST /v1/predict``: the upload read up to ``limit`` bytes, the form's parameters
    checked, then ``answer(data, name, threshold, top_k, heatmap)`` off the event loop."""

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
        if threshold is None:  # the request's value overrides the deployed one
            threshold = default_threshold
        return await asyncio.to_thread(answer, data, file.filename or "", threshold, top_k, heatmap)


def app_of(bundle: Bundle, decision: dict | None, max_batch: int, window_ms: float) -> FastAPI:
    """The app of one server process over a loaded bundle: its deployed upload limit, and a
    micro-batcher unless ``max_batch`` is 1 (``serve/main.py`` and each worker build it so)."""
    deploy = bundle.meta["spec"].get("deploy", {})
    batcher = MicroBatcher(bundle, max_batch, window_ms) if max_batch > 1 else None
    return create_app(bundle, deploy.get("max_upload_mb", 32), decision, batcher)
