"""A segmentation bundle on new images: the class of every pixel of the image as it was given
(a label-map PNG) and each class's area (serve's ``/v1/predict``, the ``predict`` batch job).

The model sees what ingest made of the image (``transforms.resize``: squash, letterbox,
center_crop, tile); its logits go back through the same geometry onto the original pixels
(bilinear on logits, then the most probable class). Pixels no model input showed (outside a
center crop) are ``IGNORE`` (255)."""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from ...data.dataset import to_model_input
from ...data.decode import BadImage, decode, for_boxes
from ...data.frames import FORMS
from ...data.transforms import resize
from ...data.transforms import resize_windows as windows
from ...data.video import VIDEO_SUFFIXES
from ...models.bundle import Bundle
from ...rundir.records import ChunkDamaged, PredictJob, PredictLayout
from ...util import write_json_atomic, write_text_atomic
from .draw import overlay_png
from .info import INFO, is_instance
from .instances import MASK_AT, SCORE_AT
from .metrics import IGNORE

MASKS = "masks"  # OUT/masks/<input's relative path>.png
INSTANCES = "instances"  # OUT/instances/<input's relative path>.json (Mask R-CNN)


@torch.no_grad()
def logits_of(bundle: Bundle, images: torch.Tensor) -> torch.Tensor:
    """The bundle's logits N×K×S×S (float32, CPU) for uint8 NHWC images."""
    return bundle.model(to_model_input(images, bundle.device)).float().cpu()


def segment_image(bundle: Bundle, source: str | Path | bytes, name: str = "") -> np.ndarray:
    """The class of each pixel of the decoded image (uint8 H×W at the file's stored pixels,
    as ingest reads masks), ``IGNORE`` where no model input covered it."""
    return segment_frame(bundle, decode_frame(bundle, source, name))


def decode_frame(bundle: Bundle, source: str | Path | bytes, name: str = "") -> np.ndarray:
    """The image as ingest reads it for masks (its stored pixels, H×W×C uint8)."""
    if name.lower().endswith(VIDEO_SUFFIXES):  # a whole video: which frame is not said
        raise BadImage(f"a video: segmentation reads one frame; name it as {FORMS}")
    return decode(source, for_boxes(bundle.decode_options), name=name)[0]


def segment_frame(bundle: Bundle, frame: np.ndarray) -> np.ndarray:
    """``segment_image`` of an already decoded frame."""
    opts = bundle.decode_options
    height, width = frame.shape[:2]
    tiles = resize(frame, opts.size, opts.resize, opts.tile_grid)
    logits = logits_of(bundle, torch.from_numpy(np.stack(tiles)))
    k = logits.shape[1]
    sums = torch.zeros(k, height, width)
    covered = torch.zeros(height, width, dtype=torch.bool)
    for t, (sx0, sy0, sx1, sy1, ox0, oy0, ox1, oy1) in enumerate(
        windows(width, height, opts.size, opts.resize, opts.tile_grid)
    ):
        part = logits[t : t + 1, :, oy0:oy1, ox0:ox1]
        back = F.interpolate(
            part, size=(sy1 - sy0, sx1 - sx0), mode="bilinear", align_corners=False
        )
        sums[:, sy0:sy1, sx0:sx1] += back[0]
        covered[sy0:sy1, sx0:sx1] = True
    mask = sums.argmax(0).to(torch.uint8)
    mask[~covered] = IGNORE
    return mask.numpy()


def instances_frame(bundle: Bundle, frame: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """A Mask R-CNN on a decoded frame: the label map its objects paint (score ≥ .5, mask ≥ .5,
    the surest on top; ``IGNORE`` where no model input covered) and each such object as
    ``{label, confidence, box, mask_rle}`` in the frame's pixels, surest first. Each tile's
    mask probabilities go back through the resize geometry (bilinear), as semantic logits do;
    an object two tiles share is one object per tile."""
    from .maskrcnn import objects_of

    opts = bundle.decode_options
    height, width = frame.shape[:2]
    tiles = resize(frame, opts.size, opts.resize, opts.tile_grid)
    found = objects_of(bundle.model, torch.from_numpy(np.stack(tiles)), bundle.device)
    kept: list[tuple[float, int, tuple[int, int], np.ndarray]] = []
    covered = np.zeros((height, width), bool)
    for f, (sx0, sy0, sx1, sy1, ox0, oy0, ox1, oy1) in zip(
        found, windows(width, height, opts.size, opts.resize, opts.tile_grid), strict=True
    ):
        covered[sy0:sy1, sx0:sx1] = True
        sure = f.scores >= SCORE_AT
        if not sure.any():
            continue
        part = torch.from_numpy(f.masks[sure][:, None, oy0:oy1, ox0:ox1])
        back = F.interpolate(part, size=(sy1 - sy0, sx1 - sx0), mode="bilinear",
                             align_corners=False)[:, 0].numpy() >= MASK_AT  # fmt: skip
        for score, label, binary in zip(f.scores[sure], f.labels[sure], back, strict=True):
            if binary.any():
                kept.append((float(score), int(label), (sx0, sy0), binary))
    kept.sort(key=lambda k: -k[0])
    mask = np.zeros((height, width), np.uint8)
    for _, label, (x, y), binary in reversed(kept):  # the surest painted last: on top
        mask[y : y + binary.shape[0], x : x + binary.shape[1]][binary] = label
    mask[~covered] = IGNORE
    return mask, [_object(bundle.classes, *k, (height, width)) for k in kept]


def _object(
    classes: list[str], score: float, label: int, at: tuple[int, int], binary: np.ndarray,
    shape: tuple[int, int],
) -> dict:  # fmt: skip
    """One object's JSON: label, confidence, box (pixel edges) and its mask as COCO RLE."""
    from pycocotools import mask as coco_mask

    ys, xs = np.nonzero(binary)
    x, y = at
    full = np.zeros(shape, np.uint8, order="F")
    full[y : y + binary.shape[0], x : x + binary.shape[1]] = binary
    code = coco_mask.encode(full)
    return {
        "label": classes[label],
        "confidence": round(score, 4),
        "box": [
            float(x + xs.min()),
            float(y + ys.min()),
            float(x + xs.max() + 1),
            float(y + ys.max() + 1),
        ],  # fmt: skip
        "mask_rle": {"size": [int(v) for v in code["size"]], "counts": code["counts"].decode()},
    }


def areas(mask: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    """Each class's pixels and fraction of the image's pixels (the ignored ones count as
    neither class)."""
    counts = np.bincount(mask.reshape(-1), minlength=256)
    total = max(mask.size, 1)
    return {
        c: {"pixels": int(counts[i]), "fraction": round(float(counts[i]) / total, 6)}
        for i, c in enumerate(classes)
    }


def mask_png(mask: np.ndarray) -> bytes:
    """The label map as an 8-bit PNG (pixel value = class index, 255 = not predicted)."""
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def rle(mask: np.ndarray, classes: list[str]) -> dict[str, dict]:
    """COCO RLE (``pycocotools.mask.encode``, counts as text) of each class present."""
    from pycocotools import mask as coco_mask

    out = {}
    for i, c in enumerate(classes):
        binary = np.asfortranarray((mask == i).astype(np.uint8))
        if binary.any():
            code = coco_mask.encode(binary)
            out[c] = {"size": [int(v) for v in code["size"]], "counts": code["counts"].decode()}
    return out


def header(classes: list[str]) -> list[str]:
    """The predictions CSV's columns: the path, the mask file, each class's pixels and fraction,
    and why a file was skipped."""
    return [
        "path",
        "mask",
        *(f"{c}_{m}" for c in classes for m in ("pixels", "fraction")),
        "skipped",
    ]


def _row(classes: list[str], path: str, mask_file: str, found: dict | None, why: str = "") -> list:
    cells: list = [path, mask_file]
    for c in classes:
        cells += [found[c]["pixels"], found[c]["fraction"]] if found else ["", ""]
    return [*cells, why]


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def predict_rows(bundle: Bundle, items: list[dict[str, str]], out: Path) -> tuple[str, int, int]:
    """CSV rows (no header) of per-class areas, one per file, and its mask PNG under
    OUT/masks/ (a Mask R-CNN: also its objects under OUT/instances/<file>.json); with the
    counts predicted and skipped."""
    rows, done = [], 0
    classes = bundle.classes
    instance = is_instance(bundle.meta["arch"])
    for item in items:
        try:
            frame = decode_frame(bundle, item["path"], item["rel"])
            if instance:
                mask, objects = instances_frame(bundle, frame)
                found = out / INSTANCES / f"{item['rel']}.json"
                found.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(found, json.dumps({"path": item["rel"], "instances": objects}))
            else:
                mask = segment_frame(bundle, frame)
            rel = f"{MASKS}/{item['rel']}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(mask_png(mask))
            rows.append(_row(classes, item["rel"], rel, areas(mask, classes)))
            done += 1
        except BadImage as exc:
            rows.append(_row(classes, item["rel"], "", None, str(exc)))
        except Exception as exc:  # a decoder bug must not stop the other files (as ingest)
            why = f"decoder error: {type(exc).__name__}: {exc}"
            rows.append(_row(classes, item["rel"], "", None, why))
    return _csv(rows), done, len(items) - done


def chunk_rows(text: str, items: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    """(the path of each CSV row of a chunk, each input's path); ``ChunkDamaged`` when the text
    is not rows of this task's CSV."""
    try:
        rows = list(csv.reader(io.StringIO(text)))
        if any(len(r) < 3 for r in rows):
            raise ValueError("a row with fewer than 3 cells")
    except (ValueError, csv.Error) as exc:
        raise ChunkDamaged(f"not segmentation CSV rows: {exc}") from None
    return [r[0] for r in rows], [item["rel"] for item in items]


def merge_rows(
    out: Path, files: list[Path], job: PredictJob, meta: dict, log: logging.Logger
) -> int:
    """Every chunk in input order, then the reader's skipped files → ``predictions.csv`` (with
    its header); ``summary.json`` counts the files and each class's mean area fraction."""
    classes = list(meta["classes"])
    text = "".join(f.read_text() for f in files)
    rows = list(csv.reader(io.StringIO(text)))
    rows += [_row(classes, s["path"], "", None, s["reason"]) for s in job.skipped]
    done = [r for r in rows if r[1]]
    mean_fraction = {
        c: round(float(np.mean([float(r[3 + 2 * i]) for r in done])), 6) if done else None
        for i, c in enumerate(classes)
    }
    summary = {
        "model": job.model,
        "source": job.source,
        "files": len(rows),
        "predicted": len(done),
        "skipped": len(rows) - len(done),
        "mean_area_fraction": mean_fraction,
        "masks": MASKS,
        "chunks": job.chunks,
    }
    outputs = PredictLayout(out)
    write_text_atomic(outputs.predictions(INFO.predictions_suffix), _csv([header(classes), *rows]))
    write_json_atomic(outputs.summary, summary)
    log.info("%s: %d images segmented", outputs.predictions(INFO.predictions_suffix), len(done))
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def serve_response(
    bundle: Bundle, data: bytes, name: str, top_k: int | None = None, heatmap: bool = False
) -> dict:
    """``xvhpc serve``'s answer for a segmenter: one prediction per class present (its area
    fraction as the confidence, largest first, at most ``top_k``), each class's pixels and
    fraction, and the mask in the uploaded image's pixels as a PNG (base64) and as COCO RLE per
    class; ``heatmap``: the mask drawn over the image too (``heatmap`` field, a PNG). The
    threshold does not apply (every pixel gets its most probable class). A Mask R-CNN answers
    its objects (score ≥ .5) as the predictions (label, confidence, box) and in ``instances``
    (with each mask as RLE), and the label map they paint."""
    frame = decode_frame(bundle, data, name)
    objects = None
    if is_instance(bundle.meta["arch"]):
        mask, objects = instances_frame(bundle, frame)
    else:
        mask = segment_frame(bundle, frame)
    found = areas(mask, bundle.classes)
    drawn: dict = {}
    if heatmap:
        drawn = {
            "heatmap": base64.b64encode(overlay_png(frame, mask)).decode(),
            "heatmap_label": "mask",
        }
    predictions = [
        {"label": c, "confidence": a["fraction"]}
        for c, a in sorted(found.items(), key=lambda kv: -kv[1]["fraction"])
        if a["pixels"]
    ][:top_k]
    if objects is not None:  # a Mask R-CNN: one prediction per object, surest first
        predictions = [{k: o[k] for k in ("label", "confidence", "box")} for o in objects][:top_k]
        drawn["instances"] = objects
    return {
        "predictions": predictions,
        "areas": found,
        "mask": base64.b64encode(mask_png(mask)).decode(),
        "mask_rle": rle(mask, bundle.classes),
        **drawn,
    }
