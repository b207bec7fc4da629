"""(job step) ``xvhpc predict-chunk``: one chunk of a predict job's inputs →
``chunks/chunk-<i>-<key><suffix>``, or ``--merge``: every chunk → ``predictions<suffix>`` +
``summary.json``.

Task-blind: the bundle's task (``Task.predict_chunk``, ``chunk_rows``, ``merge``) says what a
chunk holds (a classifier: CSV rows of probabilities and decisions; a detector: JSON lines of
boxes); this driver picks the chunk and its device, checks and writes the files.
A chunk file is written atomically, so one that exists is complete: a rerun skips it and a
killed task leaves nothing half-written behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from ..models.bundle import load_bundle
from ..registry import load_task
from ..rundir import BundleFiles
from ..rundir.records import (
    ChunkDamaged,
    PredictError,
    PredictJob,
    PredictLayout,
    job_key,
    task_of,
)
from ..runtime.placement import place
from ..runtime.whoami import launcher_rank
from ..stats.decision import DecisionError
from ..tasks.base import Task
from ..util import write_text_atomic
from .common import setup_logging


def chunk_file(out: Path, index: int, key: str, suffix: str = ".csv") -> Path:
    return PredictLayout(out).chunk(index, key, suffix)


def model_of(job: PredictJob) -> tuple[Task, dict]:
    """The task of the job's model and its ``meta.json`` (a missing one: FileNotFoundError)."""
    meta = json.loads(BundleFiles(Path(job.model)).meta.read_text())
    return load_task(task_of(meta)), meta


def rank_chunk(index: int, per_job: int) -> tuple[int, str]:
    """The chunk this rank predicts and its device: element ``index`` of the array holds
    ``per_job`` chunks, one per rank, each rank on the GPU it sees (runtime/placement.py)."""
    rank, local = launcher_rank(os.environ) if per_job > 1 else (0, 0)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpu = place(local, count).index
    return index * per_job + rank, "cpu" if gpu is None else f"cuda:{gpu}"


def run_chunk(out: Path, index: int, log: logging.Logger, per_job: int = 1) -> int:
    """Predict chunk ``index`` (of element ``index`` with ``per_job`` > 1: this rank's) unless
    its file already exists."""
    if per_job < 1:
        raise PredictError(f"--per-job {per_job}: give 1 or more (chunks per array element)")
    job = PredictJob.read(out)
    index, device = rank_chunk(index, per_job)
    if per_job > 1 and index >= job.chunks:
        log.info("rank of chunk %d: the last element has fewer chunks; nothing to do", index)
        return 0
    if not 0 <= index < job.chunks:
        raise PredictError(f"chunk {index} out of range (this job has {job.chunks})")
    task, meta = model_of(job)
    target = chunk_file(out, index, job_key(out), task.chunk_suffix)
    if target.is_file():
        why = chunk_problem(task, target, job.chunk(index), meta)
        if why is None:
            log.info("chunk %d: already done (%s), skipping", index, target)
            return 0
        log.warning("chunk %d: %s is damaged (%s): predicting it again", index, target, why)
    bundle = load_bundle(job.model, device)
    text, done, skipped = task.predict_chunk(bundle, job, index, out)
    write_text_atomic(target, text)
    log.info("chunk %d: %d predicted, %d skipped on %s → %s", index, done, skipped, device, target)
    return 0


def merge(out: Path, log: logging.Logger, fmt: str | None = None, order: str = "input") -> int:
    """Join every chunk (in input order) and the reader's skipped files into the predictions."""
    job = PredictJob.read(out)
    task, meta = model_of(job)
    files = [chunk_file(out, i, job_key(out), task.chunk_suffix) for i in range(job.chunks)]
    missing = [i for i, f in enumerate(files) if not f.is_file()]
    if missing:
        raise PredictError(
            f"{len(missing)} chunk(s) not finished ({', '.join(map(str, missing[:10]))}); "
            "rerun the same `xvhpc predict` command to complete them"
        )
    damaged = {
        i: why
        for i, f in enumerate(files)
        if (why := chunk_problem(task, f, job.chunk(i), meta)) is not None
    }
    if damaged:
        for i in damaged:
            files[i].unlink(missing_ok=True)  # the rerun predicts it again
        shown = "; ".join(f"chunk {i}: {why}" for i, why in list(damaged.items())[:5])
        raise PredictError(
            f"{len(damaged)} chunk file(s) damaged, removed and not merged ({shown}); rerun the "
            "same `xvhpc predict` command to predict them again"
        )
    code = task.merge(out, files, job, meta, log)
    if code == 0 and fmt is not None:
        write_review(task, out, job, meta, fmt, order, log)
    return code


def write_review(
    task: Task, out: Path, job: PredictJob, meta: dict, fmt: str, order: str, log: logging.Logger
) -> Path:
    """OUT/<fmt>.json from the merged predictions: Label Studio's task import (one prediction
    per image) or COCO; least confident first with ``order`` uncertainty."""
    from ..data.labelstudio import coco_document, labelstudio_tasks, ordered

    if fmt not in task.info.review_formats or not hasattr(task, "reviews"):
        raise PredictError(
            f"--format {fmt}: task {task.info.name} writes no review files "
            f"(its formats: {', '.join(task.info.review_formats) or 'none'})"
        )
    predictions = PredictLayout(out).predictions(task.chunk_suffix)
    files = {item["rel"]: item["path"] for item in job.inputs}
    classes = list(meta["classes"])
    reviews, skipped = task.reviews(predictions, files, classes)
    reviews = ordered(reviews, order)
    version = f"{meta.get('arch', 'model')} {Path(job.model).parent.name}".strip()
    writers = {"labelstudio": lambda: labelstudio_tasks(reviews, version),
               "coco": lambda: coco_document(reviews, classes)}  # fmt: skip
    doc = writers[fmt]()
    target = PredictLayout(out).review(fmt)
    write_text_atomic(target, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    log.info(
        "%s: %d image(s) for review (%s order), %d skipped", target, len(reviews), order, skipped
    )
    return target


def chunk_problem(task: Task, file: Path, items: list[dict[str, str]], meta: dict) -> str | None:
    """Why a chunk file is not the complete result of its inputs (cut short, edited, of
    other inputs), or None. A chunk that exists was written atomically, so this catches a
    file damaged afterwards: merging it would lose or invent rows silently."""
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return f"unreadable: {exc}"
    try:
        paths, want = task.chunk_rows(text, items, meta)
    except ChunkDamaged as exc:
        return str(exc)
    if len(paths) != len(want):
        return f"{len(paths)} rows for {len(want)} inputs"
    if paths != want:
        return "its rows are not this chunk's inputs"
    return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``xvhpc predict-chunk``'s flags."""
    p.add_argument("--run-dir", required=True)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument(
        "--per-job",
        type=int,
        default=1,
        help="chunks per array element, one per rank (whole-node sites: one per GPU)",
    )
    p.add_argument("--merge", action="store_true")
    from ..data.labelstudio import FORMATS, ORDERS

    p.add_argument("--format", choices=FORMATS, help="also write review files (--merge)")
    p.add_argument("--order", choices=ORDERS, default=ORDERS[0], help="of the review files")


def main(args: argparse.Namespace) -> int:
    log = setup_logging()
    out = Path(args.run_dir).resolve()
    try:
        if args.merge:
            return merge(out, log, args.format, args.order)
        if args.chunk is None:
            raise PredictError("give --chunk INDEX or --merge")
        return run_chunk(out, args.chunk, log, args.per_job)
    except (PredictError, DecisionError, FileNotFoundError) as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
