"""``xvhpc export``: TorchScript or ONNX, with a sidecar JSON describing preprocessing.

Task-blind: the bundle's task writes the model and its sidecar (``Task.export``); a Triton
model repository is ``serve/triton.py``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..models.bundle import load_bundle
from ..registry import load_task
from ..rundir import Layout
from ..rundir.records import resolve_model, task_of


def export(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Export the run's bundle to ``fmt`` (torchscript, onnx) at ``out`` (default:
    RUN_DIR/export/model.pt|.onnx) with its sidecar JSON; what is written is the task's."""
    run = Path(run_dir)
    model_dir = resolve_model(run)
    bundle = load_bundle(model_dir)
    suffix = {"torchscript": ".pt", "onnx": ".onnx"}[fmt]
    target = Path(out) if out else Layout(run).export_file(suffix)
    return load_task(task_of(bundle.meta)).export(bundle, fmt, target, model_dir)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``xvhpc export``'s flags."""
    p.add_argument("run_dir")
    p.add_argument("--format", choices=["torchscript", "onnx", "triton"], default="torchscript")
    p.add_argument("--out", default=None)


def main(args: argparse.Namespace) -> int:
    try:
        if args.format == "triton":  # a model repository, not one file
            from .triton import export_triton

            repo = export_triton(args.run_dir, args.out)
            print(f"exported Triton model {repo} (repository: {repo.parent})")
            return 0
        path = export(args.run_dir, args.format, args.out)
    except (FileNotFoundError, ValueError) as exc:  # ValueError: a detector it cannot export
        print(f"xvhpc: error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {path} (+ {path.name}.json)")
    return 0
