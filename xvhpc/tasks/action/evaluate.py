"""``xvhpc evaluate`` for action detection: each point's clip model slid over its validation
videos (the ingested sliding windows) → segments → per-class AP at tIoU 0.3/0.5/0.7 and their
mean with bootstrap intervals over videos (``metrics.json``), every video's segments
(``predictions.jsonl``), and for a few videos a timeline (true vs predicted segments) and the
frames at the detected times (the report shows them)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ...data.roles import role_index
from ...evaluation import EvaluateError, show
from ...models.bundle import load_bundle
from ...rundir import PREDICTIONS_STEM, Layout
from ...util import read_json, write_json_atomic, write_text_atomic
from .dataset import ActionDataset
from .info import INFO
from .ingest import WINDOW
from .localize import action_metrics, segments_from_windows
from .models import clip_input
from .timeline import timeline_png

if TYPE_CHECKING:
    from ...rundir.run import RunDir

SAMPLES = 3  # validation videos drawn (timeline and frames)


@torch.no_grad()
def window_scores(model, dataset: ActionDataset, device) -> dict[str, dict]:
    """Each validation video's windows: spans (W×2 s), class probabilities (W×K), their
    record indices, its true segments and duration."""
    videos: dict[str, dict] = {}
    for i in range(len(dataset)):
        info = dataset.info(i)
        entry = videos.setdefault(
            info["video"],
            {"spans": [], "rows": [], "truth": info["truth"], "duration": info.get("duration")},
        )
        if info["kind"] == WINDOW:
            entry["spans"].append((info["start"], info["end"]))
            entry["rows"].append(i)
    model.eval()
    for entry in videos.values():
        order = np.argsort([s[0] for s in entry["spans"]], kind="stable")
        entry["rows"] = [entry["rows"][k] for k in order]
        entry["spans"] = np.asarray([entry["spans"][k] for k in order], float).reshape(-1, 2)
        probs = []
        for start in range(0, len(entry["rows"]), 16):
            clips = dataset.clips(np.asarray(entry["rows"][start : start + 16]))
            logits = model(clip_input(torch.from_numpy(clips), device)).float()
            probs.append(torch.softmax(logits, 1).cpu().numpy())
        entry["probs"] = np.concatenate(probs) if probs else np.zeros((0, 0))
    return videos


def _draw(layout: Layout, point: int, videos: dict, dets: dict, classes: list[str], ds) -> list:
    """Timeline and detected frames of the first ``SAMPLES`` videos: their files (relative)."""
    out = layout.eval_samples(point)
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for n, (video, entry) in enumerate(sorted(videos.items())[:SAMPLES]):
        (out / f"{n}-timeline.png").write_bytes(
            timeline_png(video, entry["truth"], dets[video], classes, entry["duration"])
        )
        frames = []
        for k, (start, end, c, conf) in enumerate(dets[video][:3]):
            centres = entry["spans"].mean(1)
            row = entry["rows"][int(np.abs(centres - (start + end) / 2).argmin())]
            image = ds.middle_frame(row)
            pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
            pil = pil.resize((pil.width * 3, pil.height * 3), Image.Resampling.NEAREST)
            pil.save(out / f"{n}-frame{k}.png")
            frames.append({"file": f"samples/{n}-frame{k}.png", "label": classes[c],
                           "time": round((start + end) / 2, 3), "confidence": round(conf, 4)})  # fmt: skip
        drawn.append({"video": video, "timeline": f"samples/{n}-timeline.png", "frames": frames})
    return drawn


def evaluate_point(
    run: RunDir, point: int, data: str | None, log: logging.Logger, keep: dict | None = None
) -> dict | None:
    """One point's action figures on its validation videos (``data``: refused in this version;
    ``keep``: unused, no fold pooling)."""
    if data:
        raise EvaluateError("evaluate --data is for classification only")
    layout = Layout(run.root)
    if not layout.bundle(point).exists():
        log.error("point %d has no trained model at %s", point, layout.point_model(point))
        return None
    bundle = load_bundle(layout.point_model(point))
    spec = run.point(point)
    dataset = ActionDataset(role_index(run.root, spec.data.split, "score"))
    classes = bundle.classes
    videos = window_scores(bundle.model, dataset, bundle.device)
    names = sorted(videos)
    dets = {v: segments_from_windows(videos[v]["spans"], videos[v]["probs"]) for v in names}
    ev = spec.evaluate
    metrics = action_metrics(
        [dets[v] for v in names],
        [videos[v]["truth"] for v in names],
        classes,
        ev.bootstrap,
        ev.seed,
    )
    lines = [json.dumps({"video": v, "segments": segment_dicts(dets[v], classes),
                         "truth": segment_dicts([(*t, 1.0) for t in videos[v]["truth"]], classes)})
             for v in names]  # fmt: skip
    write_text_atomic(
        layout.eval_dir(point) / (PREDICTIONS_STEM + INFO.predictions_suffix),
        "".join(line + "\n" for line in lines),
    )
    metrics.update({
        "task": INFO.name, "point": point, "params": run.plan["points"][point],
        "classes": classes, "unit": "video",
        "samples": _draw(layout, point, videos, dets, classes, dataset),
        "training": read_json(layout.progress(point), {}),
    })  # fmt: skip
    write_json_atomic(layout.eval_metrics(point), metrics)
    log.info("point %d: mAP %s, mAP@0.5 %s on %d videos", point, show(metrics["tmap"]),
             show(metrics["tmap50"]), len(names))  # fmt: skip
    return metrics


def segment_dicts(found: list, classes: list[str]) -> list[dict]:
    """Segments as ``{label, confidence, start, end}`` (seconds, best first)."""
    return [
        {"label": classes[int(c)], "confidence": round(float(p), 6), "start": round(float(s), 3),
         "end": round(float(e), 3)}
        for s, e, c, p in sorted(found, key=lambda d: -d[3])
    ]  # fmt: skip
