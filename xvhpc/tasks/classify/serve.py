"""A classifier behind ``xvhpc serve``: the ranked class confidences after the model's decision
rule, the decision, and on request a Grad-CAM overlay. ``serve/app.py`` owns the HTTP side
(limits, form fields, status codes) and calls ``serve_response`` through the task."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from ...data.decode import decode
from ...models.bundle import Bundle, overlay_png
from ...models.infer import forward
from ...stats.decision import decide


def rank_predictions(
    probs: np.ndarray, classes: list[str], threshold: float, top_k: int | None
) -> list[dict]:
    """Classes with confidence ≥ threshold, most confident first (threshold 0 → every class)."""
    ranked = sorted(zip(classes, (float(p) for p in probs), strict=True), key=lambda kv: -kv[1])
    kept = [{"label": c, "confidence": p} for c, p in ranked if p >= threshold]
    return kept[:top_k] if top_k else kept


HEATMAP_MAX_SIDE = 1024  # px: the overlay's longest side (the input's size when smaller)


def overlay_parts(
    bundle: Bundle, data: bytes, name: str, cam: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
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


def serve_response(
    bundle: Bundle,
    data: bytes,
    name: str,
    threshold: float,
    top_k: int | None,
    heatmap: bool,
    decision: dict | None,
    batcher: Callable[[torch.Tensor], np.ndarray] | None,
) -> dict:
    """The ranked classes after temperature and the operating point, the decision, and the
    heatmap of the decided class when asked. ``batcher`` shares a forward pass with concurrent
    requests; both paths go through ``forward``, so their answers are the same bits.
    A ``BadImage`` propagates: the app answers 415."""
    x = bundle.inputs(data, name)
    probs = batcher(x) if batcher else forward(bundle, x)
    scaled, label = decide(probs.mean(0), bundle.classes, decision)
    probs, best = scaled[0], int(label[0])  # temperature, then the operating point
    response: dict = {
        "predictions": rank_predictions(probs, bundle.classes, threshold, top_k),
        "decision": bundle.classes[best],
    }
    if heatmap:
        cam = bundle.heatmap(x, best)
        png = overlay_png(*overlay_parts(bundle, data, name, cam))
        response["heatmap"] = base64.b64encode(png).decode()
        response["heatmap_label"] = bundle.classes[best]
    return response
