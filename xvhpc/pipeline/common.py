"""What every step driver shares: logging set up per rank, progress bars or log lines."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(rank: int = 0) -> logging.Logger:
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s xvhpc %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    return logging.getLogger("xvhpc")


def want_bar() -> bool:
    """Progress bars on a terminal (or when `xvhpc run` relays to one); log lines in batch logs."""
    return sys.stderr.isatty() or os.environ.get("XVHPC_PROGRESS") == "bar"


def progress(iterable, total: int, desc: str, log: logging.Logger, every_s: float = 30.0):
    """tqdm on a terminal; periodic log lines in batch logs."""
    if want_bar():
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, unit="img")
        return
    import time

    last = start = time.monotonic()
    for i, item in enumerate(iterable, start=1):
        yield item
        now = time.monotonic()
        if now - last >= every_s or i == total:
            rate = i / max(now - start, 1e-9)
            log.info("%s: %d/%d (%.0f%%), %.1f/s", desc, i, total, 100 * i / max(total, 1), rate)
            last = now
