"""What to ingest for action detection: videos with their labelled time segments.

A CSV with the columns ``video,label,start,end`` (one row per segment, seconds; the video path
relative to the CSV's folder; a video with no action gets a row with an empty label), or an
ActivityNet-like JSON: ``{"database": {"<id>": {"annotations": [{"label": ..., "segment":
[start, end]}], "file": "<path>"}}}`` (without ``file``: ``<id>.<ext>`` beside the JSON or in
its ``videos/`` folder). A row or annotation that cannot be used is dropped with its reason; a
video that is missing or outside the data is skipped with its reason. Class 0 is ``background``.
A video is one sample: the split never puts clips of one video on both sides.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from pathlib import Path

from ...data.catalog import _unusable, display_name, read_csv_text
from ...data.folds import split_samples
from ...data.sample import Catalog, CatalogError, Sample
from ...data.video import VIDEO_SUFFIXES
from ...spec.schema import DataSpec
from .info import BACKGROUND

COLUMNS = ("video", "label", "start", "end")
Segment = tuple[float, float, str]  # start, end (seconds), label


def _times(start: object, end: object) -> tuple[float, float] | str:
    """(start, end) as finite seconds with start < end, or why not."""
    try:
        s, e = float(str(start)), float(str(end))
    except ValueError:
        return f"start/end {start!r}, {end!r} are not numbers"
    if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or e <= s:
        return f"start {s} and end {e}: need 0 <= start < end"
    return s, e


def from_csv(path: Path) -> tuple[dict[str, list[Segment]], list[dict[str, str]]]:
    """Each video's segments (by its path relative to the CSV) and the dropped rows."""
    rows = list(csv.DictReader(io.StringIO(read_csv_text(path))))
    if not rows or any(c not in rows[0] for c in COLUMNS):
        raise CatalogError(f"{path}: needs the columns {','.join(COLUMNS)}")
    videos: dict[str, list[Segment]] = {}
    dropped = []
    for line, row in enumerate(rows, start=2):
        video = (row["video"] or "").strip()
        if not video:
            dropped.append({"path": f"{path.name}:{line}", "reason": "empty video column"})
            continue
        segments = videos.setdefault(video, [])
        label = (row["label"] or "").strip()
        if not label:
            continue  # a video listed without an action: all background
        times = _times(row["start"], row["end"])
        if isinstance(times, str):
            dropped.append({"path": f"{path.name}:{line}", "reason": f"segment dropped: {times}"})
            continue
        segments.append((*times, display_name(label)))
    return videos, dropped


def _json_video(root: Path, key: str, entry: dict) -> str:
    """Where an ActivityNet entry's video is: its ``file``, else ``<id>.<ext>`` found."""
    if isinstance(entry.get("file"), str):
        return entry["file"]
    for folder in ("", "videos/"):
        for suffix in VIDEO_SUFFIXES:
            if (root / f"{folder}{key}{suffix}").is_file():
                return f"{folder}{key}{suffix}"
    return f"{key}.mp4"  # reported missing


def from_json(path: Path) -> tuple[dict[str, list[Segment]], list[dict[str, str]]]:
    """Each video's segments from an ActivityNet-like JSON, and the dropped annotations."""
    try:
        doc = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: not valid JSON: {exc}") from None
    database = doc.get("database") if isinstance(doc, dict) else None
    if not isinstance(database, dict):
        raise CatalogError(
            f'{path}: expected {{"database": {{"<video id>": {{"annotations": ...}}}}}}'
        )
    videos: dict[str, list[Segment]] = {}
    dropped = []
    for key, entry in database.items():
        if not isinstance(entry, dict):
            dropped.append({"path": f"{path.name}: {key}", "reason": "entry is not an object"})
            continue
        segments = videos.setdefault(_json_video(path.parent, key, entry), [])
        for n, ann in enumerate(entry.get("annotations") or []):
            where = f"{path.name}: {key} annotation {n}"
            seg = ann.get("segment") if isinstance(ann, dict) else None
            label = ann.get("label") if isinstance(ann, dict) else None
            if not isinstance(label, str) or not label.strip():
                dropped.append({"path": where, "reason": "segment dropped: no label"})
                continue
            if not isinstance(seg, list) or len(seg) != 2:
                dropped.append({"path": where, "reason": "segment dropped: not [start, end]"})
                continue
            times = _times(*seg)
            if isinstance(times, str):
                dropped.append({"path": where, "reason": f"segment dropped: {times}"})
                continue
            segments.append((*times, display_name(label.strip())))
    return videos, dropped


def build_action_catalog(source: str | Path, spec: DataSpec) -> Catalog:
    """List, split and plan an action source; deterministic for the same files and spec."""
    path = Path(source)
    if not path.is_file():
        raise CatalogError(
            f"data.source {path}: task: action reads a CSV (video,label,start,end) or an "
            "ActivityNet-like JSON file"
        )
    read = from_csv if path.suffix.lower() == ".csv" or spec.format == "csv" else from_json
    videos, dropped = read(path)
    labels = sorted({s[2] for segs in videos.values() for s in segs} - {BACKGROUND})
    classes = [BACKGROUND, *labels]
    skipped, samples = [], []
    root = path.parent
    for rel, segments in sorted(videos.items()):
        shown = display_name(rel)
        file = root / rel
        if Path(rel).suffix.lower() not in VIDEO_SUFFIXES:
            skipped.append({"path": shown, "reason": f"not a video ({', '.join(VIDEO_SUFFIXES)})"})
            continue
        if why := _unusable(file, root, spec.follow_links):
            skipped.append({"path": shown, "reason": why})
            continue
        target = tuple((s, e, classes.index(label)) for s, e, label in sorted(segments))
        common = Counter(label for *_, label in segments).most_common(1)
        stratum = common[0][0] if common else BACKGROUND
        samples.append(Sample(str(file.resolve()), shown, stratum, target=target))
    if not samples:
        raise CatalogError(f"{path}: no usable video (task: action needs one)")
    if len(classes) < 2:
        raise CatalogError(f"{path}: no labelled segment; action detection needs one action")
    samples = split_samples(samples, spec.split.validation, spec.split.seed, spec.split.stratify)
    notes = [f"{len(samples)} videos with {sum(len(s.target) for s in samples)} segments of "
             f"{len(labels)} actions"]  # fmt: skip
    return Catalog(classes, samples, skipped + dropped, notes)
