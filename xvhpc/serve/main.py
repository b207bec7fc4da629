"""``xvhpc serve RUN_DIR``: load the run's bundle and its decision rule, then serve it from one
process or from ``--workers`` processes. It sits above both ``app.py`` (one process's app) and
``workers.py`` (several), so neither imports the other's caller."""

from __future__ import annotations

import argparse
import sys

from ..models.bundle import load_bundle
from ..rundir.records import resolve_model
from ..stats.decision import DecisionError, read_decision
from ..util import at_least
from .app import app_of
from .workers import serve_workers


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``xvhpc serve``'s flags."""
    p.add_argument("run_dir")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=at_least(1, 65535), default=None)
    p.add_argument("--workers", type=int, default=1, help="server processes (CPU serving)")
    p.add_argument(
        "--max-batch", type=int, default=16, help="images per forward pass (1: no batching)"
    )
    p.add_argument(
        "--batch-window-ms", type=float, default=5.0, help="how long a batch waits to fill"
    )


def main(args: argparse.Namespace) -> int:
    """Serve on the spec's ``deploy.host``/``port`` unless the flags say otherwise."""
    import uvicorn

    model_dir = resolve_model(args.run_dir)
    try:
        bundle = load_bundle(model_dir)
        decision = read_decision(model_dir, bundle.classes)
    except (FileNotFoundError, DecisionError) as exc:
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
    deploy = bundle.meta["spec"].get("deploy", {})
    host = args.host or deploy.get("host", "127.0.0.1")
    port = args.port or deploy.get("port", 8000)
    max_batch, window_ms = getattr(args, "max_batch", 16), getattr(args, "batch_window_ms", 5.0)
    if getattr(args, "workers", 1) > 1:  # processes, each with its own model and batcher
        return serve_workers(model_dir, args.workers, host, port, max_batch, window_ms)
    uvicorn.run(
        app_of(bundle, decision, max_batch, window_ms), host=host, port=port, log_level="info"
    )
    return 0
