"""A classifier on a predict job's files: one CSV row per file (class probabilities after the
model's decision rule, the decision, or why it was skipped), Grad-CAM heatmaps on request, and
the merge of the chunks into ``predictions.csv`` + ``summary.json``.

The task-blind driver (``pipeline/predict.py``) picks the chunk, checks and writes its file; this
module only knows what a classifier's rows are.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ...data.catalog import display_name
from ...data.decode import BadImage, decode
from ...models.bundle import Bundle, overlay_png
from ...models.infer import forward
from ...rundir import PREDICTIONS_STEM
from ...rundir.records import ChunkDamaged, PredictJob, PredictLayout
from ...stats.decision import decide, read_decision
from ...util import atomic_path, write_json_atomic, write_text_atomic
from .info import INFO

PREDICTIONS = PREDICTIONS_STEM + INFO.predictions_suffix  # OUT/predictions.csv


def header(classes: list[str]) -> list[str]:
    return ["path", *(f"p_{c}" for c in classes), "decision", "skipped"]


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # Pillow's reprs: differ from run to run

Entry = tuple[dict[str, str], torch.Tensor | None, str | None]  # file, input, skip reason


def _decoded(bundle: Bundle, items: list[dict[str, str]]) -> Iterator[Entry]:
    """(item, model input or None, skip reason or None) per file, in order."""
    for item in items:
        try:
            yield item, bundle.inputs(item["path"], item["rel"]), None
        except BadImage as exc:
            yield item, None, _ADDRESS.sub("", str(exc))
        except Exception as exc:  # a decoder bug must not stop the other files (as ingest)
            yield item, None, _ADDRESS.sub("", f"decoder error: {type(exc).__name__}: {exc}")


def _batches(bundle: Bundle, items: list[dict[str, str]], batch_size: int) -> Iterator[list[Entry]]:
    """Lists of (item, input, reason), each holding at most ``batch_size`` decoded images."""
    batch: list[Entry] = []
    count = 0
    for entry in _decoded(bundle, items):
        batch.append(entry)
        count += entry[1] is not None
        if count >= batch_size:
            yield batch
            batch, count = [], 0
    if batch:
        yield batch


def predict_batch(bundle: Bundle, batch: list[Entry]) -> list[np.ndarray | None]:
    """Class probabilities per entry (None for a skipped one); tiles of one image averaged."""
    inputs = [x for _, x, _ in batch if x is not None]
    if not inputs:
        return [None] * len(batch)
    probs = forward(bundle, torch.cat(inputs))
    out: list[np.ndarray | None] = []
    start = 0
    for _, x, _ in batch:
        if x is None:
            out.append(None)
            continue
        out.append(probs[start : start + len(x)].mean(0))
        start += len(x)
    return out


def _heatmap(bundle: Bundle, item: dict[str, str], x: torch.Tensor, label: int, out: Path) -> None:
    """Grad-CAM over the image, decoded under the model's pixel guard (data.max_image_pixels)
    and at a reduced scale where the format allows: never an unbounded full-size decode."""
    cam = bundle.heatmap(x, label)
    opts = dataclasses.replace(bundle.decode_options, size=1024, channels=3, resize="letterbox")
    png = overlay_png(decode(item["path"], opts, name=item["rel"])[0], cam)
    with atomic_path(PredictLayout(out).heatmaps / heatmap_name(item["rel"])) as tmp:
        tmp.write_bytes(png)


_NAME_BYTES = 120  # of the flattened path kept in a hashed heatmap name (limit: 255 a name)


def heatmap_name(rel: str) -> str:
    """The heatmap file of input ``rel``: the path flattened (``a/b.jpg`` → ``a__b.jpg.png``)
    where that is unambiguous and short; else a bounded prefix and a hash of the path, so
    ``a/b.jpg`` and ``a__b.jpg`` never share a file and a deep path never overflows a name."""
    shown = display_name(rel)
    flat = shown.replace("/", "__")
    if "_" not in shown and len(flat.encode()) <= _NAME_BYTES:
        return flat + ".png"
    digest = hashlib.sha256(rel.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    prefix = flat.encode()[:_NAME_BYTES].decode("utf-8", "ignore")
    return f"{prefix}.{digest}.png"


def predict_chunk(bundle: Bundle, job: PredictJob, index: int, out: Path) -> tuple[str, int, int]:
    """Chunk ``index`` as CSV text (a row per file, in input order), with the counts predicted
    and skipped; heatmaps go to ``OUT/heatmaps`` as each file is done when the job asks."""
    rule = read_decision(job.model, bundle.classes)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header(bundle.classes))
    done = skipped = 0
    for batch in _batches(bundle, job.chunk(index), job.batch_size):
        for (item, x, reason), probs in zip(batch, predict_batch(bundle, batch), strict=True):
            shown = display_name(item["rel"])  # a non-UTF-8 name as ingest shows it
            if probs is None or x is None:
                writer.writerow([shown, *[""] * len(bundle.classes), "", reason])
                skipped += 1
                continue
            scaled, label = decide(probs, bundle.classes, rule)
            decision = int(label[0])
            writer.writerow([shown, *(f"{p:.6f}" for p in scaled[0]), bundle.classes[decision], ""])
            if job.heatmaps:
                _heatmap(bundle, item, x, decision, out)
            done += 1
    return buf.getvalue(), done, skipped


def chunk_rows(text: str, items: list[dict[str, str]], meta: dict) -> tuple[list[str], list[str]]:
    """(the path of each row of a chunk's CSV, each input as a row shows it); ``ChunkDamaged``
    when the text is not CSV with the model's columns."""
    want = [display_name(item["rel"]) for item in items]
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise ChunkDamaged(f"not CSV: {exc}") from None
    if not rows or rows[0] != header(list(meta["classes"])):
        raise ChunkDamaged("its header is not the model's columns")
    if bad := [n for n, r in enumerate(rows[1:], start=2) if len(r) != len(rows[0])]:
        raise ChunkDamaged(f"line {bad[0]} has the wrong number of columns")
    return [r[0] for r in rows[1:]], want


def merge(out: Path, files: list[Path], job: PredictJob, meta: dict, log: logging.Logger) -> int:
    """Every chunk's rows in input order, then the reader's skipped files → predictions.csv;
    summary.json counts the decisions and skip reasons."""
    classes = list(meta["classes"])
    rows: list[list[str]] = []
    for file in files:
        with file.open(newline="") as fh:
            rows.extend(list(csv.reader(fh))[1:])
    blanks = [""] * (len(classes) + 1)
    rows += [[display_name(s["path"]), *blanks, s["reason"]] for s in job.skipped]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header(classes))
    writer.writerows(rows)
    outputs = PredictLayout(out)
    write_text_atomic(outputs.predictions(INFO.predictions_suffix), buf.getvalue())
    summary = summarize(rows, job)
    write_json_atomic(outputs.summary, summary)
    log.info(
        "%s: %d predicted, %d skipped",
        outputs.predictions(INFO.predictions_suffix),
        summary["predicted"],
        summary["skipped"],
    )
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def summarize(rows: list[list[str]], job: PredictJob) -> dict:
    """Counts per decision and per skip reason (its text up to the first colon)."""
    decisions = Counter(r[-2] for r in rows if not r[-1])
    reasons = Counter(r[-1].split(":")[0] for r in rows if r[-1])
    return {
        "model": job.model,
        "source": job.source,
        "files": len(rows),
        "predicted": sum(decisions.values()),
        "skipped": sum(reasons.values()),
        "decisions": dict(sorted(decisions.items())),
        "skipped_reasons": dict(sorted(reasons.items())),
        "chunks": job.chunks,
    }
