"""What every step needs: the run directory's plan and spec."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..rundir import Layout
from ..spec import ExperimentSpec, LoadedSpec, load_spec, point_spec
from ..util import read_json


@dataclass
class RunDir:
    root: Path
    plan: dict
    loaded: LoadedSpec

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        layout = Layout(Path(path).resolve())
        plan = read_json(layout.plan)
        if plan is None:
            raise SystemExit(
                f"xvhpc: error: {layout.root} is not a compiled run directory (no plan.json); "
                "run `xvhpc compile` first"
            )
        return cls(layout.root, plan, load_spec(layout.spec))

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    @property
    def spec(self) -> ExperimentSpec:
        return self.loaded.spec

    def point(self, index: int) -> ExperimentSpec:
        points = self.plan["points"]
        if not 0 <= index < len(points):
            raise SystemExit(
                f"xvhpc: error: point {index} out of range (this run has {len(points)})"
            )
        return point_spec(self.loaded, points[index])

    @property
    def shard_dir(self) -> Path:
        return self.layout.shards


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
