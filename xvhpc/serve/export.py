"""``xvhpc export``: TorchScript or ONNX, with a sidecar JSON describing preprocessing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..models.bundle import load_bundle
from ..runtime.compat import onnx_export_kwargs
from ..stats.decision import read_decision
from ..util import atomic_path, write_json_atomic


def export(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    run = Path(run_dir)
    model_dir = run / "model" if (run / "model").is_dir() else run
    bundle = load_bundle(model_dir)
    size = bundle.size
    example = torch.zeros(1, 3, size, size)
    suffix = {"torchscript": ".pt", "onnx": ".onnx"}[fmt]
    target = Path(out) if out else run / "export" / f"model{suffix}"
    if bundle.meta["spec"].get("task") == "detect":
        from ..tasks.detect.export import export_detector

        return export_detector(bundle, fmt, target)
    with atomic_path(target) as tmp:
        if fmt == "torchscript":
            traced = torch.jit.trace(bundle.model, example)
            traced.save(str(tmp))
        else:
            torch.onnx.export(
                bundle.model,
                (example,),
                str(tmp),
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
                **onnx_export_kwargs(),
            )
    meta = bundle.meta
    write_json_atomic(
        target.with_name(target.name + ".json"),
        {
            "format": fmt,
            "file": target.name,
            "classes": meta["classes"],
            "input": {"shape": [None, 3, size, size], "dtype": "float32", "layout": "NCHW"},
            "output": "logits (apply softmax for confidences)",
            "preprocessing": {**preprocessing(meta), "mean": meta["mean"], "std": meta["std"]},
            "arch": meta["arch"],
            "validation": meta.get("validation", {}),
            # temperature, then the operating point: see xvhpc/stats/decision.py (null: argmax)
            "decision": read_decision(model_dir, meta["classes"]),
        },
    )
    return target


def preprocessing(meta: dict) -> dict:
    """What the sidecar says an image goes through before the model (decode, resize, scale)."""
    return {
        "decode": "grayscale (replicated to 3 channels)" if meta["channels"] == 1 else "RGB",
        "resize": meta["resize"],
        "image_size": int(meta["image_size"]),
        "scale": "1/255",
    }


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
