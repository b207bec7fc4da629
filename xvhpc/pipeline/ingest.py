"""``xvhpc ingest``: labelled images → resized, split, augmented HDF5 shards, then a manifest.

Each shard is independent (an array task on a cluster, or a loop here); every task lists and
splits the whole source the same way, so shards agree without talking to each other. A
task-blind driver: the spec's task lists the source, turns each file into records and writes
its shards (``tasks/<name>/``, the ingest hooks); the worker pools are in ``data/pool.py``, the
manifest in ``data/manifest.py``, and who this process is (array index, CPUs, MPI rank) comes
from ``runtime/whoami.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .. import lock
from ..data.folds import split_settings
from ..data.manifest import build_manifest, decode_options, preprocessing, shard_infos
from ..data.pool import count_one, counting_pool, mp_context, poll, sample_mapper
from ..data.records import SampleJob
from ..data.sample import Catalog, CatalogError, Sample
from ..data.shards import (
    Record,
    ShardStats,
    clean_stale,
    finish_shard,
    shard_complete,
    shard_name,
)
from ..registry import load_task
from ..rundir import WORKER_LOST_EXIT
from ..rundir.run import RunDir
from ..runtime.whoami import BatchTask, array_index, batch_task
from ..util import write_json_atomic
from .common import progress, setup_logging


def ingest_shard(
    run: RunDir,
    classes: list[str],
    samples: list[Sample],
    index: int,
    mapper: Callable,
    log,
    tick: Callable[[], None] | None = None,
) -> dict:
    """Write one shard (skipped when already complete: a rerun resumes).

    Progress: a bar / log lines of its own, or ``tick()`` per sample when a parent shows it."""
    shard_dir = run.shard_dir
    shard_dir.mkdir(parents=True, exist_ok=True)
    done = shard_complete(shard_dir, index, split_settings(run.spec.data))
    if done is not None:
        log.info("shard %d already complete (%d images), skipping", index, done["count"])
        return done
    clean_stale(shard_dir, index)
    started = time.perf_counter()
    data = run.spec.data
    task = load_task(run.spec.task)
    label_of = {c: i for i, c in enumerate(classes)}  # a label not a class (no boxes): -1
    stats = ShardStats(index, inputs=len(samples))
    per: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    orig: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    writer = task.shard_writer()(
        shard_dir / shard_name(index), data.image_size, data.channels, data.compression
    )
    opts = decode_options(preprocessing(data))
    jobs = [SampleJob(s, label_of.get(s.label, -1), data, opts) for s in samples]
    try:
        # the task's bound hook goes to the worker processes (pickled by reference)
        results = zip(jobs, mapper(task.process_sample, jobs), strict=True)
        if tick is None:
            results = progress(results, len(jobs), f"ingest shard {index}", log)
        _collect(results, writer, stats, per, orig, tick)
        writer.close({"classes": json.dumps(classes), "shard": str(index)})
    except BaseException:
        writer.abort()
        raise
    stats.count = writer.count
    stats.seconds = time.perf_counter() - started
    stats.per_split_class = {k: dict(v) for k, v in per.items()}
    stats.original_per_split_class = {k: dict(v) for k, v in orig.items()}
    info = finish_shard(shard_dir, stats, split_settings(data))
    log.info("shard %d: %d images written, %d skipped", index, stats.count, len(stats.skipped))
    return info


def _collect(results, writer, stats, per, orig, tick) -> None:
    """Write each sample's records; count them per split and label; note the skipped."""
    for job, (records, reason) in results:
        if tick is not None:
            tick()
        if reason is not None:  # a skipped file, or boxes of a kept one (records given)
            stats.skipped.append({"path": job.sample.rel, "reason": reason})
            if not records:
                continue
        name = job.sample.label  # a class, or the task's name for none (no boxes)
        for record in records:
            writer.add(record)
            per[record.split][name] += 1
            if not record.ops:
                orig[record.split][name] += 1
                stats.hashes[record.split].append(record.hash)
                stats.originals.append(original_entry(record, name))


def original_entry(record: Record, label: str) -> dict:
    """What merge needs of an original image: fold counts and the near-duplicate report."""
    return {
        "split": record.split,
        "fold": record.fold,
        "label": label,
        "dhash": record.dhash,
        "hash": record.hash,
        "source": record.source,
    }


def _shard_worker(run: RunDir, classes: list[str], samples: list[Sample], index: int) -> None:
    ingest_shard(run, classes, samples, index, map, logging.getLogger("xvhpc"), count_one)


def ingest_shards(
    run: RunDir, catalog: Catalog, indices: list[int], shards: int, workers: int, log
) -> None:
    """Write several shards with ``workers`` processes.

    While at least ``workers`` shards are pending, each worker writes whole shards on its own
    (no pixels cross processes, per-shard work runs in parallel too); the remainder is written
    one shard at a time with the samples spread over the workers.
    """
    split = split_settings(run.spec.data)
    pending = [i for i in indices if shard_complete(run.shard_dir, i, split) is None]
    for index in sorted(set(indices) - set(pending)):
        log.info("shard %d already complete, skipping", index)
    whole = len(pending) // workers * workers if workers > 1 else 0
    if whole:
        total = sum(len(catalog.shard(i, shards)) for i in pending[:whole])
        desc = f"ingest {whole} shards, {workers} at a time"
        with counting_pool(workers, setup_logging) as (pool, counter):
            futures = [
                pool.submit(_shard_worker, run, catalog.classes, catalog.shard(i, shards), i)
                for i in pending[:whole]
            ]
            for _ in progress(poll(counter, futures), total, desc, log):
                pass
            for future in futures:
                future.result()  # a worker's exception surfaces here
    if pending[whole:]:
        with sample_mapper(workers) as mapper:
            for index in pending[whole:]:
                classes, samples = catalog.classes, catalog.shard(index, shards)
                ingest_shard(run, classes, samples, index, mapper, log)


def merge(run: RunDir, catalog: Catalog, shards: int, log) -> int:
    """Check every shard is done; write manifest.json (counts, skipped, leaks, sha256s)."""
    infos, missing = shard_infos(run.shard_dir, shards, run.spec.data)
    if missing:
        print(
            f"xvhpc: error: shard(s) {missing} are not complete; rerun "
            f"`xvhpc ingest --run-dir {run.root} --shard N`",
            file=sys.stderr,
        )
        return 1
    data = run.spec.data
    manifest = build_manifest(infos, catalog, data)
    write_json_atomic(run.layout.manifest, manifest)
    for s in manifest["skipped"]:
        log.warning("skipped %s: %s", s["path"], s["reason"])
    for note in catalog.notes:
        if note.startswith("warning: "):
            log.warning("%s", note.removeprefix("warning: "))
    leaks = manifest["leaks"]["identical_images_in_train_and_val"]
    if leaks:
        log.warning(
            "%d identical image(s) in different splits/folds (policy: %s)", leaks, data.leaks
        )
    for entry in manifest["leaks"]["examples"][:20]:
        log.warning("identical images in %s: %s", " and ".join(entry["parts"]),
                    ", ".join(entry["sources"]))  # fmt: skip
    log.info(
        "manifest: %d images in %d shards, %d skipped, classes %s",
        sum(i["count"] for i in infos),
        len(infos),
        len(manifest["skipped"]),
        ", ".join(catalog.classes),
    )
    if "error" in manifest:
        print(f"xvhpc: error: {manifest['error']}; see {run.layout.manifest}", file=sys.stderr)
        return 3
    return 0


def rank_workers(workers: int, task: BatchTask) -> int:
    """Worker processes of one ingest rank. Under MPI, only where workers start without fork
    (forkserver/spawn: a forked MPI process is unsafe): then each rank uses the cores of its
    resource set, not one of them (issue 22 N9: Summit ranks own 7-10 cores each)."""
    if task.mpi_size == 1:
        return workers
    return workers if mp_context().get_start_method() != "fork" else 1


def _write_shards(
    args, run: RunDir, catalog: Catalog, workers: int, task: BatchTask, log
) -> int | None:
    """The shards this call writes: all (shared among MPI ranks), one, or none (--merge).

    Returns an exit code to stop with, or None to go on (to the merge)."""
    shards = run.spec.data.shards
    if args.shard == "all":
        mine = list(range(task.mpi_rank, shards, task.mpi_size))  # MPI ranks share the shards
        ingest_shards(run, catalog, mine, shards, rank_workers(workers, task), log)
        if task.comm is not None:
            task.comm.Barrier()
        return 0 if task.mpi_rank != 0 else None
    if args.shard is not None or task.array_index is not None:
        index = int(args.shard) if args.shard not in (None, "") else task.array_index
        if index is None or not 0 <= index < shards:
            print(f"xvhpc: error: shard {index} out of range 0..{shards - 1}", file=sys.stderr)
            return 2
        with sample_mapper(workers) as mapper:
            ingest_shard(run, catalog.classes, catalog.shard(index, shards), index, mapper, log)
        return None if args.merge else 0
    if not args.merge:
        print(
            "xvhpc: error: give --shard N, --shard all, or --merge (or run as an array task)",
            file=sys.stderr,
        )
        return 2
    return None


def _shard_arg(text: str) -> str | int:
    """``--shard``: a shard index (0, 1, …) or ``all``."""
    if text == "all":
        return text
    if not text.isdigit():  # also refuses "-1", "1.5", ""
        raise argparse.ArgumentTypeError(f"{text!r} is not a shard index (0, 1, …) or 'all'")
    return int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``xvhpc ingest``'s flags."""
    p.add_argument("--run-dir", required=True)
    p.add_argument(
        "--shard",
        type=_shard_arg,
        default=None,
        help="shard index, or 'all' (default: from the array task id)",
    )
    p.add_argument("--merge", action="store_true", help="write manifest.json from finished shards")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: data.workers, else the task's CPUs up to 8); with "
        "--shard all and at least as many shards, each writes whole shards",
    )


def _locks(args: argparse.Namespace) -> list[tuple[str, bool]] | None:
    """What this ``xvhpc ingest`` writes, as run-dir locks (see xvhpc/lock.py); None: nothing
    (an MPI rank other than 0 of ``--shard all``, whose rank 0 holds the lock for all)."""
    if args.shard == "all":
        return [("ingest", False)] if lock.launch_rank() == 0 else None
    index = args.shard if args.shard is not None else array_index(os.environ)
    parts = [("ingest", True)]
    if index is not None:
        parts.append((f"shard-{index:05d}", False))
    if args.merge:
        parts.append(("merge", False))
    return parts


def main(args: argparse.Namespace) -> int:
    """``xvhpc ingest``, holding the run-dir locks of what it writes (``_locks``)."""
    parts = _locks(args)
    if parts is None:
        return _ingest(args)
    with lock.step(Path(args.run_dir).resolve(), parts):
        return _ingest(args)


def _ingest(args: argparse.Namespace) -> int:
    run = RunDir.open(args.run_dir)
    task = batch_task()
    log = setup_logging(task.mpi_rank)
    data = run.spec.data
    try:
        catalog = load_task(run.spec.task).catalog(run.plan["data_source"], data)
    except CatalogError as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
    workers = args.workers if args.workers is not None else (data.workers or min(task.cpus, 8))
    try:
        code = _write_shards(args, run, catalog, workers, task, log)
    except BrokenProcessPool:
        print(
            "xvhpc: error: a worker process died (killed, or out of memory?); complete shards "
            "are kept: rerun the same command to resume (with fewer --workers if memory is short)",
            file=sys.stderr,
        )
        return WORKER_LOST_EXIT
    if code is not None:
        return code
    if args.merge:
        return merge(run, catalog, data.shards, log)
    return 0
