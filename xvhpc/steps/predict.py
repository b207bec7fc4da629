"""(job step) ``xvhpc predict-chunk``: one chunk of a predict job's inputs →
``chunks/chunk-<i>-<key>.csv``, or ``--merge``: every chunk → ``predictions.csv`` + ``summary.json``.

A chunk decodes each file exactly as ingest does (the bundle's preprocessing), runs the model
on batches of images, and applies the model's decision rule (temperature, operating point).
Its CSV is written atomically, so a chunk file that exists is complete: a rerun skips it and
a killed task leaves nothing half-written behind.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..data.catalog import display_name
from ..data.decode import BadImage, decode
from ..models.bundle import Bundle, load_bundle, overlay_png
from ..rundir.records import CHUNKS, PredictError, PredictJob, job_key
from ..runtime.placement import place
from ..runtime.task import launcher_rank
from ..serve.batching import forward
from ..stats.decision import DecisionError, decide, read_decision
from ..util import atomic_path, write_json_atomic, write_text_atomic
from .common import setup_logging

PREDICTIONS = "predictions.csv"
SUMMARY = "summary.json"


def chunk_file(out: Path, index: int, key: str, suffix: str = ".csv") -> Path:
    return out / CHUNKS / f"chunk-{index:05d}-{key}{suffix}"


def is_detector(model: str | Path) -> bool:
    """Whether a bundle detects boxes (its chunks and output are JSON lines, not CSV)."""
    meta = json.loads((Path(model) / "meta.json").read_text())
    return meta.get("spec", {}).get("task") == "detect"


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
    with atomic_path(out / "heatmaps" / heatmap_name(item["rel"])) as tmp:
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


def rank_chunk(index: int, per_job: int) -> tuple[int, str]:
    """The chunk this rank predicts and its device: element ``index`` of the array holds
    ``per_job`` chunks, one per rank, each rank on the GPU it sees (runtime/placement.py)."""
    rank, local = launcher_rank(os.environ) if per_job > 1 else (0, 0)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpu = place(local, count).index
    return index * per_job + rank, "cpu" if gpu is None else f"cuda:{gpu}"


def run_chunk(out: Path, index: int, log: logging.Logger, per_job: int = 1) -> int:
    """Predict chunk ``index`` (of element ``index`` with ``per_job`` > 1: this rank's) unless
    its CSV already exists."""
    if per_job < 1:
        raise PredictError(f"--per-job {per_job}: give 1 or more (chunks per array element)")
    job = PredictJob.read(out)
    index, device = rank_chunk(index, per_job)
    if per_job > 1 and index >= job.chunks:
        log.info("rank of chunk %d: the last element has fewer chunks; nothing to do", index)
        return 0
    if not 0 <= index < job.chunks:
        raise PredictError(f"chunk {index} out of range (this job has {job.chunks})")
    detector = is_detector(job.model)
    target = chunk_file(out, index, job_key(out), ".jsonl" if detector else ".csv")
    if target.is_file():
        why = chunk_problem(target, job.chunk(index), _classes(job), detector)
        if why is None:
            log.info("chunk %d: already done (%s), skipping", index, target)
            return 0
        log.warning("chunk %d: %s is damaged (%s): predicting it again", index, target, why)
    bundle = load_bundle(job.model, device)
    if detector:
        from ..tasks.detect.predict import predict_lines

        text, done, skipped = predict_lines(bundle, job.chunk(index))
        write_text_atomic(target, text)
        log.info(
            "chunk %d: %d predicted, %d skipped on %s → %s", index, done, skipped, device, target
        )
        return 0
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
    write_text_atomic(target, buf.getvalue())
    log.info("chunk %d: %d predicted, %d skipped on %s → %s", index, done, skipped, device, target)
    return 0


def merge(out: Path, log: logging.Logger) -> int:
    """Join every chunk (in input order) and the reader's skipped files into predictions.csv."""
    job = PredictJob.read(out)
    detector = is_detector(job.model)
    suffix = ".jsonl" if detector else ".csv"
    files = [chunk_file(out, i, job_key(out), suffix) for i in range(job.chunks)]
    missing = [i for i, f in enumerate(files) if not f.is_file()]
    if missing:
        raise PredictError(
            f"{len(missing)} chunk(s) not finished ({', '.join(map(str, missing[:10]))}); "
            "rerun the same `xvhpc predict` command to complete them"
        )
    classes = _classes(job)
    damaged = {
        i: why
        for i, f in enumerate(files)
        if (why := chunk_problem(f, job.chunk(i), classes, detector)) is not None
    }
    if damaged:
        for i in damaged:
            files[i].unlink(missing_ok=True)  # the rerun predicts it again
        shown = "; ".join(f"chunk {i}: {why}" for i, why in list(damaged.items())[:5])
        raise PredictError(
            f"{len(damaged)} chunk file(s) damaged, removed and not merged ({shown}); rerun the "
            "same `xvhpc predict` command to predict them again"
        )
    if detector:
        from ..tasks.detect.predict import merge_lines

        return merge_lines(out, files, job, log)
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
    write_text_atomic(out / PREDICTIONS, buf.getvalue())
    summary = summarize(rows, job)
    write_json_atomic(out / SUMMARY, summary)
    log.info(
        "%s: %d predicted, %d skipped", out / PREDICTIONS, summary["predicted"], summary["skipped"]
    )
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


def _classes(job: PredictJob) -> list[str]:
    return list(json.loads((Path(job.model) / "meta.json").read_text())["classes"])


def chunk_problem(
    file: Path, items: list[dict[str, str]], classes: list[str], detector: bool
) -> str | None:
    """Why a chunk file is not the complete result of its inputs (cut short, edited, of
    other inputs), or None. A chunk that exists was written atomically, so this catches a
    file damaged afterwards: merging it would lose or invent rows silently."""
    want = [display_name(item["rel"]) for item in items]
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return f"unreadable: {exc}"
    if detector:
        try:
            paths = [json.loads(line)["path"] for line in text.splitlines()]
        except (ValueError, KeyError, TypeError) as exc:
            return f"not JSON lines of {{path, boxes}}: {exc}"
        want = [item["rel"] for item in items]
    else:
        try:
            rows = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error as exc:
            return f"not CSV: {exc}"
        if not rows or rows[0] != header(classes):
            return "its header is not the model's columns"
        if bad := [n for n, r in enumerate(rows[1:], start=2) if len(r) != len(rows[0])]:
            return f"line {bad[0]} has the wrong number of columns"
        paths = [r[0] for r in rows[1:]]
    if len(paths) != len(want):
        return f"{len(paths)} rows for {len(want)} inputs"
    if paths != want:
        return "its rows are not this chunk's inputs"
    return None


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


def main(args: argparse.Namespace) -> int:
    log = setup_logging()
    out = Path(args.run_dir).resolve()
    try:
        if args.merge:
            return merge(out, log)
        if args.chunk is None:
            raise PredictError("give --chunk INDEX or --merge")
        return run_chunk(out, args.chunk, log, args.per_job)
    except (PredictError, DecisionError, FileNotFoundError) as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
