"""Export of a classifier bundle: TorchScript (a trace: a classifier's graph has no
data-dependent shapes) or ONNX (a batch axis), with a sidecar JSON that says how an image
becomes the input, that the output is logits, and the decision rule to apply."""

from __future__ import annotations

from pathlib import Path

import torch

from ...models.bundle import Bundle, preprocessing
from ...runtime.compat import onnx_export_kwargs
from ...stats.decision import read_decision
from ...util import atomic_path, write_json_atomic


def export_classifier(bundle: Bundle, fmt: str, target: Path, model_dir: Path) -> Path:
    """Write the model to ``target`` and its sidecar beside it (``target.json``)."""
    size = bundle.size
    example = torch.zeros(1, 3, size, size)
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
