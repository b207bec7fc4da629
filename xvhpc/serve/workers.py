"""``xvhpc serve --workers N``: N uvicorn processes, each loading the model and its own
micro-batcher (uvicorn starts workers from an import string, so the app is built from
``XVHPC_SERVE`` in each process)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi import FastAPI

ENV = "XVHPC_SERVE"


def app_from_env() -> FastAPI:
    """The app of one worker process (uvicorn's factory)."""
    from ..models.bundle import load_bundle
    from ..stats.decision import read_decision
    from .app import app_of

    cfg = json.loads(os.environ[ENV])
    bundle = load_bundle(cfg["model_dir"])
    decision = read_decision(cfg["model_dir"], bundle.classes)
    return app_of(bundle, decision, cfg["max_batch"], cfg["window_ms"])


def serve_workers(
    model_dir: Path, workers: int, host: str, port: int, max_batch: int, window_ms: float
) -> int:
    """Run ``workers`` processes on one port (the kernel spreads connections over them)."""
    import uvicorn

    os.environ[ENV] = json.dumps(
        {"model_dir": str(model_dir), "max_batch": max_batch, "window_ms": window_ms}
    )
    uvicorn.run(
        "xvhpc.serve.workers:app_from_env",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level="info",
    )
    return 0
