"""``xvhpc ingest``: labelled images → resized, split, augmented HDF5 shards, then a manifest.

Each shard is independent (an array task on a cluster, or a loop here); every task lists and
splits the whole source the same way, so shards agree without talking to each other.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import sys
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from ..data.catalog import Catalog, CatalogError, Sample, build_catalog
from ..data.decode import BadImage, DecodeOptions
from ..data.shards import (
    Record,
    ShardStats,
    ShardWriter,
    clean_stale,
    content_hash,
    finish_shard,
    shard_complete,
    shard_name,
)
from ..data.transforms import augment, prepare
from ..spec.schema import DataSpec
from ..util import write_json_atomic
from .common import RunDir, progress, setup_logging


@dataclass(frozen=True)
class Job:
    sample: Sample
    label: int
    data: DataSpec


def process_sample(job: Job) -> tuple[list[Record], str | None]:
    """Decode, resize and augment one file; (records, None) or ([], reason)."""
    data = job.data
    opts = DecodeOptions(
        data.image_size,
        data.channels,
        data.max_image_pixels,
        data.dicom_frames,
        data.resize,
        data.tile_grid,
    )
    try:
        frames = prepare(job.sample.path, opts, name=job.sample.rel)
    except BadImage as exc:
        return [], str(exc)
    except Exception as exc:  # a decoder bug must not stop the other files
        return [], f"decoder error: {type(exc).__name__}: {exc}"
    records: list[Record] = []
    multi = len(frames) > 1
    for f, images in enumerate(frames):
        for t, image in enumerate(images):
            source = (
                job.sample.rel
                + (f"#frame{f}" if multi else "")
                + (f"#tile{t}" if len(images) > 1 else "")
            )
            # a gray image stays one channel here (hash, augment, transfer from a worker: a
            # third of the work); the shard writer stores it with data.channels channels
            records.append(
                Record(image, job.label, job.sample.split, source, hash=content_hash(image))
            )
            for copy in range(job.sample.copies):
                seed = [data.split.seed, zlib.crc32(source.encode()), copy]
                aug_image, ops = augment(
                    image, data.augment[job.sample.label], np.random.default_rng(seed)
                )
                records.append(
                    Record(
                        aug_image,
                        job.label,
                        "train",
                        source,
                        json.dumps({"copy": copy, "ops": ops}),
                    )
                )
    return records, None


@contextlib.contextmanager
def sample_mapper(workers: int) -> Iterator[Callable]:
    """An ordered ``map`` over samples that keeps ``workers`` processes busy.

    One worker: plain ``map`` in this process. More: a pool of ``workers - 1`` processes, and
    this process (which also writes the shard) decodes a chunk itself whenever the next result
    is not ready yet, so it does not sit idle. The pool is shared by every shard.
    """
    if workers <= 1:
        yield map
        return
    with ProcessPoolExecutor(
        workers - 1,
        mp_context=_mp_context(),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        yield functools.partial(_ordered_map, pool, processes=workers)


def _exit_with_parent(parent: int) -> None:
    """In a worker: exit once the parent is gone (killed, out of memory) instead of lingering
    as an orphan that blocks forever; its unfinished temp file is removed by the rerun."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_chunk(fn: Callable, chunk: list) -> list:
    return [fn(item) for item in chunk]


def _ordered_map(pool: ProcessPoolExecutor, fn: Callable, items: list, processes: int) -> Iterator:
    """``fn`` over ``items`` in order: chunks go to the pool; while the next result is not
    ready, this process takes the furthest chunk not yet given out, or, once all are given
    out, takes back the furthest one no worker has started."""
    items = list(items)
    chunk = max(1, min(8, len(items) // (32 * processes)))  # small: the tail stays short
    window = 4 * processes
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    in_pool: dict[int, Future] = {}
    done_here: dict[int, list] = {}
    frontier = 0  # the first chunk neither submitted nor taken by this process
    for i in range(len(chunks)):
        while frontier < len(chunks) and len(in_pool) < window:
            in_pool[frontier] = pool.submit(_run_chunk, fn, chunks[frontier])
            frontier += 1
        if i in done_here:
            yield from done_here.pop(i)
            continue
        future = in_pool.pop(i)
        while not future.done():
            if frontier < len(chunks) and len(done_here) < window:
                take = frontier  # instead of waiting, the furthest chunk not given out
                frontier += 1
            else:  # all given out: take back the furthest one no worker has started
                take = next((j for j in sorted(in_pool, reverse=True) if in_pool[j].cancel()), None)
                if take is None:
                    break
                del in_pool[take]
            done_here[take] = _run_chunk(fn, chunks[take])
        if future.cancel():  # not started yet: quicker here than waiting for it
            yield from _run_chunk(fn, chunks[i])
        else:
            yield from future.result()


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
    done = shard_complete(shard_dir, index)
    if done is not None:
        log.info("shard %d already complete (%d images), skipping", index, done["count"])
        return done
    clean_stale(shard_dir, index)
    data = run.spec.data
    label_of = {c: i for i, c in enumerate(classes)}
    stats = ShardStats(index, inputs=len(samples))
    per = defaultdict(lambda: defaultdict(int))
    orig = defaultdict(lambda: defaultdict(int))
    writer = ShardWriter(
        shard_dir / shard_name(index), data.image_size, data.channels, data.compression
    )
    jobs = [Job(s, label_of[s.label], data) for s in samples]
    try:
        results = zip(jobs, mapper(process_sample, jobs), strict=True)
        if tick is None:
            results = progress(results, len(jobs), f"ingest shard {index}", log)
        _collect(results, writer, stats, per, orig, classes, tick)
        writer.close({"classes": json.dumps(classes), "shard": str(index)})
    except BaseException:
        writer.abort()
        raise
    stats.count = writer.count
    stats.per_split_class = {k: dict(v) for k, v in per.items()}
    stats.original_per_split_class = {k: dict(v) for k, v in orig.items()}
    info = finish_shard(shard_dir, stats)
    log.info("shard %d: %d images written, %d skipped", index, stats.count, len(stats.skipped))
    return info


def _collect(results, writer, stats, per, orig, classes, tick) -> None:
    for job, (records, reason) in results:
        if tick is not None:
            tick()
        if reason is not None:
            stats.skipped.append({"path": job.sample.rel, "reason": reason})
            continue
        for record in records:
            writer.add(record)
            per[record.split][classes[record.label]] += 1
            if not record.ops:
                orig[record.split][classes[record.label]] += 1
                stats.hashes[record.split].append(record.hash)


_done_counter = None  # in a shard worker process: the parent's shared count of finished samples


def _count_one() -> None:
    with _done_counter.get_lock():
        _done_counter.value += 1


def _init_shard_worker(counter, parent: int) -> None:
    global _done_counter
    _done_counter = counter
    setup_logging()  # a spawned worker starts without the parent's logging set-up
    _exit_with_parent(parent)


def _shard_worker(run: RunDir, classes: list[str], samples: list[Sample], index: int) -> None:
    ingest_shard(run, classes, samples, index, map, logging.getLogger("xvhpc"), _count_one)


def ingest_shards(
    run: RunDir, catalog: Catalog, indices: list[int], shards: int, workers: int, log
) -> None:
    """Write several shards with ``workers`` processes.

    While at least ``workers`` shards are pending, each worker writes whole shards on its own
    (no pixels cross processes, per-shard work runs in parallel too); the remainder is written
    one shard at a time with the samples spread over the workers.
    """
    pending = [i for i in indices if shard_complete(run.shard_dir, i) is None]
    for index in sorted(set(indices) - set(pending)):
        log.info("shard %d already complete, skipping", index)
    whole = len(pending) // workers * workers if workers > 1 else 0
    if whole:
        ctx = _mp_context()
        counter = ctx.Value("q", 0)
        total = sum(len(catalog.shard(i, shards)) for i in pending[:whole])
        desc = f"ingest {whole} shards, {workers} at a time"
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_shard_worker, initargs=(counter, os.getpid())
        ) as pool:
            futures = [
                pool.submit(_shard_worker, run, catalog.classes, catalog.shard(i, shards), i)
                for i in pending[:whole]
            ]
            for _ in progress(_poll(counter, futures), total, desc, log):
                pass
            for future in futures:
                future.result()  # a worker's exception surfaces here
    if pending[whole:]:
        with sample_mapper(workers) as mapper:
            for index in pending[whole:]:
                classes, samples = catalog.classes, catalog.shard(index, shards)
                ingest_shard(run, classes, samples, index, mapper, log)


def _poll(counter, futures, every_s: float = 0.2) -> Iterator[None]:
    """One item per sample a shard worker finished, until every future is done."""
    seen = 0
    while True:
        finished = not wait(futures, timeout=every_s).not_done  # returns as soon as all are done
        now = counter.value
        for _ in range(now - seen):
            yield None
        seen = now
        if finished:
            return


def _mp_context():
    import multiprocessing as mp

    return mp.get_context(os.environ.get("XVHPC_MP_START_METHOD", "fork"))


def merge(run: RunDir, catalog: Catalog, shards: int, log) -> int:
    """Check every shard is done; write manifest.json (counts, skipped, leaks, sha256s)."""
    infos = []
    missing = []
    for i in range(shards):
        info = shard_complete(run.shard_dir, i)
        (infos.append(info) if info else missing.append(i))
    if missing:
        print(
            f"xvhpc: error: shard(s) {missing} are not complete; rerun `xvhpc ingest --run-dir {run.root} --shard N`",
            file=sys.stderr,
        )
        return 1
    spec = run.spec.data

    def total(key: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {"train": {}, "val": {}}
        for info in infos:
            for split, counts in info[key].items():
                for cls, n in counts.items():
                    out[split][cls] = out[split].get(cls, 0) + n
        return out

    skipped = catalog.skipped + [s for info in infos for s in info["skipped"]]
    decoded_inputs = sum(info["inputs"] for info in infos)
    inputs = decoded_inputs + len(catalog.skipped)
    bad_fraction = len(skipped) / max(inputs, 1)
    train_hashes: dict[str, list[int]] = defaultdict(list)
    val_hashes: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for info in infos:
        for h in info["hashes"]["train"]:
            train_hashes[h].append(info["index"])
        for pos, h in enumerate(info["hashes"]["val"]):
            val_hashes[h].append((info["index"], pos))
    leaks = sorted(h for h in val_hashes if h in train_hashes)
    manifest = {
        "classes": catalog.classes,
        "image_size": spec.image_size,
        "channels": spec.channels,
        "resize": spec.resize,
        "inputs": inputs,
        "unlabelled": catalog.unlabelled,
        "counts_before_augmentation": total("original_per_split_class"),
        "counts_after_augmentation": total("per_split_class"),
        "skipped": sorted(skipped, key=lambda s: s["path"]),
        "bad_fraction": round(bad_fraction, 4),
        "notes": catalog.notes,
        "leaks": {
            "identical_images_in_train_and_val": len(leaks),
            "policy": spec.leaks,
            "hashes": leaks[:100],
        },
        # with leaks: drop, the val copies of leaked images are excluded at load time
        "exclude_val_hashes": leaks if spec.leaks == "drop" else [],
        "shards": [{"file": i["file"], "count": i["count"], "sha256": i["sha256"]} for i in infos],
    }
    if bad_fraction > spec.max_bad_fraction:
        manifest["error"] = (
            f"{len(skipped)} of {inputs} files ({bad_fraction:.1%}) could not be used, above data.max_bad_fraction {spec.max_bad_fraction:.1%}"
        )
    write_json_atomic(run.root / "manifest.json", manifest)
    for s in skipped:
        log.warning("skipped %s: %s", s["path"], s["reason"])
    if leaks:
        log.warning(
            "%d identical image(s) on both sides of the split (policy: %s)", len(leaks), spec.leaks
        )
    n = sum(i["count"] for i in infos)
    log.info(
        "manifest: %d images in %d shards, %d skipped, classes %s",
        n,
        len(infos),
        len(skipped),
        ", ".join(catalog.classes),
    )
    if "error" in manifest:
        print(
            f"xvhpc: error: {manifest['error']}; see {run.root / 'manifest.json'}", file=sys.stderr
        )
        return 3
    return 0


def allocated_cpus() -> int:
    """CPUs this task may use: the scheduler's grant, else the affinity mask (not the whole node)."""
    for key in ("SLURM_CPUS_PER_TASK", "LSB_DJOB_NUMPROC"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def shard_from_env() -> int | None:
    """Array index from the scheduler: Slurm counts from 0, LSF from 1."""
    if "SLURM_ARRAY_TASK_ID" in os.environ:
        return int(os.environ["SLURM_ARRAY_TASK_ID"])
    if os.environ.get("LSB_JOBINDEX", "0") not in ("", "0"):
        return int(os.environ["LSB_JOBINDEX"]) - 1
    return None


def _mpi():
    """(rank, size, comm) under an MPI launcher with mpi4py, else (0, 1, None)."""
    if not any(
        k in os.environ
        for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "JSM_NAMESPACE_SIZE")
    ):
        return 0, 1, None
    try:
        from mpi4py import MPI
    except ImportError:
        return 0, 1, None
    comm = MPI.COMM_WORLD
    return comm.Get_rank(), comm.Get_size(), comm


def _write_shards(args, run: RunDir, catalog: Catalog, workers: int, mpi, log) -> int | None:
    """The shards this call writes: all (shared among MPI ranks), one, or none (--merge).

    Returns an exit code to stop with, or None to go on (to the merge)."""
    rank, size, comm = mpi
    shards = run.spec.data.shards
    if args.shard == "all":
        mine = list(range(rank, shards, size))  # MPI-parallel ingest: ranks share the shards
        ingest_shards(run, catalog, mine, shards, workers if size == 1 else 1, log)
        if comm is not None:
            comm.Barrier()
        return 0 if rank != 0 else None
    if args.shard is not None or shard_from_env() is not None:
        index = int(args.shard) if args.shard not in (None, "") else shard_from_env()
        if not 0 <= index < shards:
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


def main(args: argparse.Namespace) -> int:
    run = RunDir.open(args.run_dir)
    rank, size, comm = _mpi()
    log = setup_logging(rank)
    data = run.spec.data
    try:
        catalog = build_catalog(run.plan["data_source"], data)
    except CatalogError as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
    shards = data.shards
    workers = (
        args.workers if args.workers is not None else (data.workers or min(allocated_cpus(), 8))
    )
    try:
        code = _write_shards(args, run, catalog, workers, (rank, size, comm), log)
    except BrokenProcessPool:
        print(
            "xvhpc: error: a worker process died (killed, or out of memory?); complete shards "
            "are kept: rerun the same command to resume (with fewer --workers if memory is short)",
            file=sys.stderr,
        )
        return 4
    if code is not None:
        return code
    if args.merge:
        return merge(run, catalog, shards, log)
    return 0
