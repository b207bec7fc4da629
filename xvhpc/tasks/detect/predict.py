"""A detection bundle on new images: boxes ``{label, confidence, box}`` in the image's own
pixels (serve's ``/v1/predict``, the ``predict`` batch job, evaluate)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ...data.decode import BadImage, decode, for_boxes
from ...data.transforms import resize
from ...models.bundle import Bundle
from ...rundir.records import ChunkDamaged, PredictJob, PredictLayout
from ...util import write_json_atomic, write_text_atomic
from .boxes import unresize_boxes, visible
from .dataset import detector_input
from .info import INFO
from .metrics import Found
from .train import found as as_found


@torch.no_grad()
def detect(bundle: Bundle, images: torch.Tensor) -> list[Found]:
    """The bundle's detections for uint8 NHWC images (class indices, all scores)."""
    return as_found(bundle.model(detector_input(images, bundle.device)))


def boxes_json(f: Found, classes: list[str], threshold: float = 0.0) -> list[dict]:
    """``{label, confidence, box}`` per detection at or above ``threshold`` (serve, predict)."""
    return [
        {
            "label": classes[int(k)],
            "confidence": round(float(s), 4),
            "box": [round(float(v), 2) for v in b],
        }
        for b, s, k in zip(f.boxes, f.scores, f.labels, strict=True)
        if s >= threshold
    ]


def _detect_frame(bundle: Bundle, frame: np.ndarray, threshold: float) -> list[dict]:
    """One decoded frame's boxes in its own pixels: detect on each model-sized image (tiles)
    and map the boxes back."""
    opts = bundle.decode_options
    height, width = frame.shape[:2]
    tiles = resize(frame, opts.size, opts.resize, opts.tile_grid)
    out: list[dict] = []
    for t, f in enumerate(detect(bundle, torch.from_numpy(np.stack(tiles)))):
        back = unresize_boxes(f.boxes, width, height, opts.size, opts.resize, opts.tile_grid, t)
        keep = visible(back)
        out += boxes_json(
            Found(back[keep], f.scores[keep], f.labels[keep]), bundle.classes, threshold
        )
    return out


def detect_image(
    bundle: Bundle, source: str | Path | bytes, name: str = "", threshold: float = 0.0
) -> list[dict]:
    """Decode exactly as ingest does and detect, most confident first. A video gives the
    boxes of every frame ``data.video`` keeps, each with its frame's time ``t`` (seconds),
    in time order; a named frame (``clip.mp4#t=1.5``) is one image."""
    frames = decode(source, for_boxes(bundle.decode_options), name=name)
    times = getattr(frames, "times", None)
    if times is None:
        return sorted(_detect_frame(bundle, frames[0], threshold), key=lambda d: -d["confidence"])
    out: list[dict] = []
    for frame, t in zip(frames, times, strict=True):
        found = sorted(_detect_frame(bundle, frame, threshold), key=lambda d: -d["confidence"])
        out += [{**box, "t": t} for box in found]
    return out


def predict_lines(bundle: Bundle, items: list[dict[str, str]]) -> tuple[str, int, int]:
    """One JSON line per file: ``{path, boxes}`` (at the deployed threshold) or
    ``{path, skipped}``; with the counts predicted and skipped."""
    lines, done = [], 0
    threshold = float(bundle.meta.get("threshold", 0.0))
    for item in items:
        try:
            row: dict = {
                "path": item["rel"],
                "boxes": detect_image(bundle, item["path"], item["rel"], threshold),
            }
            done += 1
        except BadImage as exc:
            row = {"path": item["rel"], "skipped": str(exc)}
        except Exception as exc:  # a decoder bug must not stop the other files (as ingest)
            row = {"path": item["rel"], "skipped": f"decoder error: {type(exc).__name__}: {exc}"}
        lines.append(json.dumps(row))
    return "".join(line + "\n" for line in lines), done, len(items) - done


def chunk_rows(text: str, items: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    """(the path of each JSON line of a chunk, each input's path); ``ChunkDamaged`` when the
    text is not JSON lines of ``{path, ...}``."""
    try:
        paths = [json.loads(line)["path"] for line in text.splitlines()]
    except (ValueError, KeyError, TypeError) as exc:
        raise ChunkDamaged(f"not JSON lines of {{path, boxes}}: {exc}") from None
    return paths, [item["rel"] for item in items]


def merge_lines(out: Path, files: list[Path], job: PredictJob, log: logging.Logger) -> int:
    """Every chunk in input order, then the reader's skipped files → ``predictions.jsonl``;
    ``summary.json`` counts images and boxes per label."""
    text = "".join(f.read_text() for f in files)
    text += "".join(
        json.dumps({"path": s["path"], "skipped": s["reason"]}) + "\n" for s in job.skipped
    )
    rows = [json.loads(line) for line in text.splitlines()]
    labels = Counter(b["label"] for r in rows for b in r.get("boxes", []))
    summary = {
        "model": job.model,
        "source": job.source,
        "files": len(rows),
        "predicted": sum("boxes" in r for r in rows),
        "skipped": sum("skipped" in r for r in rows),
        "boxes": dict(sorted(labels.items())),
        "chunks": job.chunks,
    }
    outputs = PredictLayout(out)
    write_text_atomic(outputs.predictions(INFO.predictions_suffix), text)
    write_json_atomic(outputs.summary, summary)
    log.info(
        "%s: %d images, %d boxes",
        outputs.predictions(INFO.predictions_suffix),
        summary["predicted"],
        labels.total(),
    )
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def serve_response(
    bundle: Bundle, data: bytes, name: str, threshold: float, top_k: int | None
) -> dict:
    """``xvhpc serve``'s answer for a detector: the boxes at or above the threshold, most
    confident first, at most ``top_k`` (no heatmap, no decision rule). A video's boxes stay
    in time order, at most ``top_k`` a frame: cutting the whole list would drop every frame
    after the first few rather than the least confident boxes."""
    boxes = detect_image(bundle, data, name, threshold)
    if top_k is None or not boxes or "t" not in boxes[0]:
        return {"predictions": boxes[:top_k]}
    kept: Counter[float] = Counter()  # boxes kept per frame time (most confident first)
    out = []
    for box in boxes:
        if kept[box["t"]] < top_k:
            kept[box["t"]] += 1
            out.append(box)
    return {"predictions": out}
