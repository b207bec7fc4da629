"""An action bundle on new videos: segments ``{label, confidence, start, end}`` (serve's
``/v1/predict``, the ``predict`` batch job: a JSON line per video, and predictions.csv).

The video is decoded as ingest decoded it (``data.video``, streamed, the same caps), cut into
the same sliding windows, and the windows' scores become segments (``localize``)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch

from ...data.decode import BadImage
from ...models.bundle import Bundle
from ...rundir.records import ChunkDamaged, PredictJob, PredictLayout
from ...util import write_json_atomic, write_text_atomic
from .clips import clip_indices, span, windows
from .evaluate import segment_dicts
from .info import CLIP_FRAMES, INFO
from .ingest import video_frames
from .localize import segments_from_windows
from .models import clip_input

SERVE_MAX_SECONDS = 600.0  # serve: an upload longer than this is refused while it decodes


def video_clips(
    bundle: Bundle, source: str | Path | bytes, name: str = "", max_seconds=None
) -> tuple[np.ndarray, list[float]]:
    """One video decoded as ingest decoded it (the bundle's ``data.video``, its caps; serve
    shortens ``max_seconds``): its kept frames at the model's size and their times."""
    opts = bundle.decode_options
    if max_seconds is not None:
        video = dataclasses.replace(
            opts.video, max_seconds=min(opts.video.max_seconds, max_seconds)
        )
        opts = dataclasses.replace(opts, video=video)
    return video_frames(source if isinstance(source, bytes) else str(source), opts, name)


@torch.no_grad()
def frames_segments(bundle: Bundle, frames: np.ndarray, times: list[float]) -> list[dict]:
    """The segments the bundle finds in one decoded video, best first: its sliding windows
    scored 16 clips per forward pass, the scores turned into segments (``localize``)."""
    starts = windows(len(frames))
    spans = np.asarray([span(times, f, CLIP_FRAMES) for f in starts], float)
    probs = []
    model = bundle.model.eval()
    for k in range(0, len(starts), 16):
        clips = np.stack([frames[clip_indices(f, len(frames))] for f in starts[k : k + 16]])
        logits = model(clip_input(torch.from_numpy(clips), bundle.device)).float()
        probs.append(torch.softmax(logits, 1).cpu().numpy())
    return segment_dicts(segments_from_windows(spans, np.concatenate(probs)), bundle.classes)


def video_segments(
    bundle: Bundle, source: str | Path | bytes, name: str = "", max_seconds=None
) -> list[dict]:
    """The segments the bundle finds in one video, best first."""
    return frames_segments(bundle, *video_clips(bundle, source, name, max_seconds))


def predict_rows(bundle: Bundle, items: list[dict[str, str]], out: Path) -> tuple[str, int, int]:
    """A JSON line per video: its path and segments, or why it was skipped.

    Only a video that cannot be decoded is skipped: a failure of the model (a GPU out of
    memory or lost on a cluster node) stops the chunk, so the array task fails, writes no
    chunk file and the rerun predicts it again; recorded as a skip, the video's row would be
    "complete" and never retried."""
    lines: list[dict] = []
    done = 0
    for item in items:
        try:
            frames, times = video_clips(bundle, item["path"], item["rel"])
        except BadImage as exc:
            lines.append({"path": item["rel"], "segments": [], "skipped": str(exc)})
            continue
        except Exception as exc:  # a decoder bug must not stop the other videos
            why = f"decoder error: {type(exc).__name__}: {exc}"
            lines.append({"path": item["rel"], "segments": [], "skipped": why})
            continue
        lines.append({"path": item["rel"], "segments": frames_segments(bundle, frames, times)})
        done += 1
    return "".join(json.dumps(line) + "\n" for line in lines), done, len(items) - done


def chunk_rows(text: str, items: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    """(the path of each JSON line of a chunk, each input's path); ``ChunkDamaged`` when the
    text is not this task's JSON lines."""
    try:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        paths = [str(r["path"]) for r in rows]
    except (ValueError, TypeError, KeyError) as exc:
        raise ChunkDamaged(f"not action JSON lines: {exc}") from None
    return paths, [item["rel"] for item in items]


def merge_rows(
    out: Path, files: list[Path], job: PredictJob, meta: dict, log: logging.Logger
) -> int:
    """Every chunk in input order, then the reader's skipped files → predictions.jsonl, the
    same segments as predictions.csv (path,label,confidence,start,end) and summary.json."""
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
    rows += [{"path": s["path"], "segments": [], "skipped": s["reason"]} for s in job.skipped]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "confidence", "start", "end"])
    for r in rows:
        for s in r["segments"]:
            writer.writerow([r["path"], s["label"], s["confidence"], s["start"], s["end"]])
    done = [r for r in rows if "skipped" not in r]
    outputs = PredictLayout(out)
    write_text_atomic(
        outputs.predictions(INFO.predictions_suffix), "".join(json.dumps(r) + "\n" for r in rows)
    )
    write_text_atomic(outputs.predictions(".csv"), buf.getvalue())  # the same, as a table
    summary = {"model": job.model, "source": job.source, "files": len(rows), "predicted": len(done),
               "skipped": len(rows) - len(done), "segments": sum(len(r["segments"]) for r in rows),
               "chunks": job.chunks}  # fmt: skip
    write_json_atomic(outputs.summary, summary)
    log.info("%s: %d videos", outputs.predictions(INFO.predictions_suffix), len(done))
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def serve_response(
    bundle: Bundle, data: bytes, name: str, threshold: float, top_k: int | None
) -> dict:
    """``xvhpc serve``'s answer for an action model: the segments of the uploaded video
    (``{label, confidence, start, end}``, best first, those at or above ``threshold``, at most
    ``top_k``); the upload's size is capped as it streams in (serve), its duration here."""
    found = video_segments(bundle, data, name or "upload.mp4", SERVE_MAX_SECONDS)
    return {"predictions": [s for s in found if s["confidence"] >= threshold][:top_k]}
