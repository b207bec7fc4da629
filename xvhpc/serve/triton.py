"""``xvhpc export --format triton``: a Triton Inference Server model repository.

    DIR/<name>/config.pbtxt          ONNX Runtime backend, input/output names, dims, dtype,
                                     max batch size, dynamic batching, label file
    DIR/<name>/1/model.onnx          the model with its softmax: outputs class probabilities
    DIR/<name>/labels.txt            one class per line, in output order
    DIR/<name>/preprocessing.json    how to turn an image into the input (as ingest does),
                                     and the decision rule to apply to the probabilities

Triton does not decode images: a client decodes and resizes as ``preprocessing.json`` says
(``xvhpc.models.bundle.Bundle.inputs`` does exactly that) and sends float32 NCHW tensors.
Only a task that lists "triton" in its ``exports`` gets one (a classifier: class
probabilities are a fixed-size tensor; a detector's boxes are not).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.bundle import Bundle, load_bundle
from ..registry import load_task
from ..rundir import Layout
from ..rundir.records import model_task, resolve_model
from ..runtime.compat import onnx_export_kwargs
from ..stats.decision import read_decision
from ..util import (
    UserError,
    atomic_path,
    safe_label,
    write_json_atomic,
    write_text_atomic,
)

INPUT = "image"
OUTPUT = "probabilities"
MAX_BATCH = 32
QUEUE_DELAY_US = 5000  # dynamic batching: how long Triton lets a batch fill


class _WithSoftmax(torch.nn.Module):
    """The classifier followed by softmax, so Triton answers with probabilities."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def config_pbtxt(name: str, size: int, classes: int, preprocessing: str) -> str:
    """Triton's model configuration (protobuf text format of ``inference.ModelConfig``)."""
    return f"""# xvhpc export --format triton; preprocessing: {preprocessing}
name: "{name}"
backend: "onnxruntime"
max_batch_size: {MAX_BATCH}
input [
  {{
    name: "{INPUT}"
    data_type: TYPE_FP32
    dims: [ 3, {size}, {size} ]
  }}
]
output [
  {{
    name: "{OUTPUT}"
    data_type: TYPE_FP32
    dims: [ {classes} ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{
  preferred_batch_size: [ 8, 16, {MAX_BATCH} ]
  max_queue_delay_microseconds: {QUEUE_DELAY_US}
}}
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""


def preprocessing_record(bundle: Bundle, decision: dict | None) -> dict:
    meta = bundle.meta
    return {
        "input": {"name": INPUT, "shape": [None, 3, bundle.size, bundle.size], "dtype": "float32"},
        "output": {"name": OUTPUT, "classes": bundle.classes, "softmax": "applied"},
        "preprocessing": {
            **meta.get("preprocessing", {}),
            "decode": "grayscale replicated to 3 channels" if meta["channels"] == 1 else "RGB",
            "scale": "1/255",
            "mean": meta["mean"],
            "std": meta["std"],
            "reference": "xvhpc.models.bundle.Bundle.inputs (ingest's decoder and resize)",
        },
        # temperature, then the operating point (xvhpc/stats/decision.py); null: most probable
        "decision": decision,
        "arch": meta["arch"],
        "validation": meta.get("validation", {}),
    }


def export_onnx(bundle: Bundle, target: Path) -> None:
    example = torch.zeros(2, 3, bundle.size, bundle.size)
    with atomic_path(target) as tmp:
        torch.onnx.export(
            _WithSoftmax(bundle.model).eval(),
            (example,),
            str(tmp),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=17,
            **onnx_export_kwargs(),
        )


def export_triton(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the model repository; returns ``DIR/<name>``."""
    run = Path(run_dir)
    model_dir = resolve_model(run)
    task = model_task(model_dir)
    if "triton" not in load_task(task).exports:
        raise UserError(  # before anything is loaded or made: no empty TR/<name>/1/ left behind
            f"{model_dir}: Triton export is for classifiers (this model is a {task} model). "
            f"HINT: xvhpc export {run_dir} --format onnx (or torchscript) exports it"
        )
    bundle = load_bundle(model_dir)
    decision = read_decision(model_dir, bundle.classes)
    name = safe_label(bundle.meta["spec"].get("name", "model"), 64)
    root = (Path(out) if out else Layout(run).triton) / name
    export_onnx(bundle, root / "1" / "model.onnx")
    write_text_atomic(root / "labels.txt", "".join(f"{c}\n" for c in bundle.classes))
    record = preprocessing_record(bundle, decision)
    write_json_atomic(root / "preprocessing.json", record)
    pre = json.dumps(
        {k: record["preprocessing"].get(k) for k in ("image_size", "channels", "resize")}
    )
    config = config_pbtxt(name, bundle.size, len(bundle.classes), f"{pre}, see preprocessing.json")
    write_text_atomic(root / "config.pbtxt", config)
    return root
