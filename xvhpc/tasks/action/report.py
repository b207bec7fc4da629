"""The action-detection part of the report (no torch: ``xvhpc report`` stays light)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ...report.html import ci as show
from ...report.html import table


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def report_section(eval_dir: Path, m: dict) -> str:
    """HTML for one point's metrics (``m``): mAP at tIoU 0.3/0.5/0.7 and their mean with
    intervals, per-class AP, and per sample video its timeline and the detected frames."""
    per_class = table(
        ["action", "AP@0.3", "AP@0.5", "AP@0.7"],
        [[c, show(v["tmap30"]), show(v["tmap50"]), show(v["tmap70"])]
         for c, v in m["per_class_ap"].items()],
    )  # fmt: skip
    videos = []
    for s in m.get("samples", []):
        frames = "".join(
            _img(eval_dir / f["file"], f"{f['label']} at {f['time']} s ({f['confidence']})")
            + f"<span>{html.escape(f['label'])} at {f['time']} s</span>"
            for f in s["frames"]
        )
        videos.append(
            f"<h4>{html.escape(s['video'])}</h4>{_img(eval_dir / s['timeline'], s['video'])}"
            f"<div>{frames}</div>"
        )
    return (
        f"<h3>Action detection, point {m['point']}</h3><p>mAP (mean over tIoU 0.3/0.5/0.7) "
        f"{show(m['tmap'])}; mAP@0.3 {show(m['tmap30'])}; mAP@0.5 {show(m['tmap50'])}; mAP@0.7 "
        f"{show(m['tmap70'])} on {m['videos']} videos, {m['segments']} true segments, "
        f"{m['detections']} detections (95 % bootstrap over videos)</p>{per_class}"
        f"<p>Timelines: true segments (top) and predicted (bottom); frames at the detected "
        f"times</p>{''.join(videos)}"
    )
