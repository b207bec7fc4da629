"""Worker processes for ingest: an ordered work-stealing map over samples, a pool of whole-shard
workers with a shared progress count, and the watchdog that ends a worker with its parent.

Nothing here knows about images: the caller passes the function to run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import Any


def mp_context():
    """The start method (``XVHPC_MP_START_METHOD``, default fork: workers share the catalog)."""
    import multiprocessing as mp

    return mp.get_context(os.environ.get("XVHPC_MP_START_METHOD", "fork"))


def exit_with_parent(parent: int) -> None:
    """In a worker: exit once the parent is gone (killed, out of memory) instead of lingering
    as an orphan that blocks forever; its unfinished temp file is removed by the rerun."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


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
        mp_context=mp_context(),
        initializer=exit_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        yield functools.partial(ordered_map, pool, processes=workers)


def _run_chunk(fn: Callable, chunk: list) -> list:
    return [fn(item) for item in chunk]


def ordered_map(pool: ProcessPoolExecutor, fn: Callable, items: list, processes: int) -> Iterator:
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
                back = next((j for j in sorted(in_pool, reverse=True) if in_pool[j].cancel()), None)
                if back is None:
                    break
                take = back
                del in_pool[take]
            done_here[take] = _run_chunk(fn, chunks[take])
        if future.cancel():  # not started yet: quicker here than waiting for it
            yield from _run_chunk(fn, chunks[i])
        else:
            yield from future.result()


# ----------------------------------------------------------------- whole-shard workers
_done_counter: Any = None  # in a shard worker process: the parent's shared count of finished items


def count_one() -> None:
    """In a shard worker: one more item finished (the parent's progress bar reads the count)."""
    with _done_counter.get_lock():
        _done_counter.value += 1


def _init_counting_worker(counter: Any, parent: int, setup: Callable[[], Any]) -> None:
    global _done_counter
    _done_counter = counter
    setup()  # e.g. logging: a spawned worker starts without the parent's set-up
    exit_with_parent(parent)


def _noop() -> None:
    return None


@contextlib.contextmanager
def counting_pool(workers: int, setup: Callable[[], Any] = _noop) -> Iterator[tuple[Any, Any]]:
    """(pool, counter): ``workers`` processes whose tasks call ``count_one`` per finished item;
    ``setup`` runs first in each worker (it must be picklable under spawn)."""
    ctx = mp_context()
    counter = ctx.Value("q", 0)
    with ProcessPoolExecutor(
        workers,
        mp_context=ctx,
        initializer=_init_counting_worker,
        initargs=(counter, os.getpid(), setup),
    ) as pool:
        yield pool, counter


def poll(counter: Any, futures: list[Future], every_s: float = 0.2) -> Iterator[None]:
    """One item per item a worker finished (``counter``), until every future is done."""
    seen = 0
    while True:
        finished = not wait(futures, timeout=every_s).not_done  # returns as soon as all are done
        now = counter.value
        for _ in range(now - seen):
            yield None
        seen = now
        if finished:
            return
