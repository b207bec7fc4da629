"""Micro-batching for ``xvhpc serve``: concurrent requests share one forward pass.

Each request thread hands its model input (N tiles × 3 × S × S) to :class:`MicroBatcher` and
waits; one batching thread takes whatever arrived within a short window (or as soon as
``max_batch`` images are waiting), runs the model once, and hands each request its rows.

Exactness: the model's rows do not depend on which other rows share the batch, except that
a batch of a single row takes another kernel path on CPU (≈1e-5 apart in the logits). Both
the batched and the unbatched path therefore go through :func:`~xvhpc.models.infer.forward`, which never runs a
one-row batch; batched answers then equal unbatched ones bit for bit (tested).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from ..models.bundle import Bundle
from ..models.infer import forward


@dataclass
class _Request:
    x: torch.Tensor
    done: Future


class MicroBatcher:
    """Collects requests for up to ``window_ms`` (or ``max_batch`` images) per forward pass."""

    def __init__(self, bundle: Bundle, max_batch: int = 16, window_ms: float = 5.0):
        if max_batch < 1 or window_ms < 0:
            raise ValueError("max_batch must be ≥ 1 and window_ms ≥ 0")
        self.bundle = bundle
        self.max_batch = max_batch
        self.window_s = window_ms / 1000
        self.batches = 0  # forward passes run (for benchmarks and tests)
        self.requests = 0
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        """This request's rows of a shared forward pass (blocks the calling thread)."""
        self._ensure_thread()
        request = _Request(x, Future())
        self._queue.put(request)
        return request.done.result()

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="xvhpc-batcher", daemon=True
                )
                self._thread.start()

    def _collect(self) -> list[_Request]:
        """The first waiting request, then whatever else arrives within the window."""
        batch = [self._queue.get()]
        rows = len(batch[0].x)
        deadline = time.monotonic() + self.window_s
        while rows < self.max_batch:
            left = deadline - time.monotonic()
            try:
                request = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(request)
            rows += len(request.x)
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            try:
                probs = forward(self.bundle, torch.cat([r.x for r in batch]))
            except Exception as exc:  # every waiting request gets the error, none hangs
                for r in batch:
                    r.done.set_exception(exc)
                continue
            self.batches += 1
            self.requests += len(batch)
            start = 0
            for r in batch:
                r.done.set_result(probs[start : start + len(r.x)])
                start += len(r.x)
