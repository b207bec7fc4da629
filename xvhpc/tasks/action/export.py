"""Export of an action bundle's clip model: TorchScript (a trace) or ONNX (dynamic batch), both
from a Kinetics-normalised float32 clip N×3×T×S×S to logits N×K; the sidecar says so."""

from __future__ import annotations

from pathlib import Path

import torch

from ...models.bundle import Bundle, preprocessing
from ...runtime.compat import onnx_export_kwargs
from ...util import atomic_path, write_json_atomic
from .info import CLIP_FRAMES
from .models import KINETICS_MEAN, KINETICS_STD


def export_clip_model(bundle: Bundle, fmt: str, target: Path) -> Path:
    size = bundle.size
    example = torch.rand(1, 3, CLIP_FRAMES, size, size)
    model = bundle.model.eval()
    with atomic_path(target) as tmp, torch.no_grad():
        if fmt == "torchscript":
            torch.jit.trace(model, example).save(str(tmp))
        elif fmt == "onnx":
            torch.onnx.export(
                model, (example,), str(tmp), input_names=["clip"], output_names=["logits"],
                dynamic_axes={"clip": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                **onnx_export_kwargs(),
            )  # fmt: skip
        else:
            raise ValueError(f"format {fmt!r}: action models export to torchscript or onnx")
    meta = bundle.meta
    write_json_atomic(
        target.with_name(target.name + ".json"),
        {
            "format": fmt, "file": target.name, "task": "action", "classes": meta["classes"],
            "input": f"float32 [N, 3, {CLIP_FRAMES}, {size}, {size}]: {CLIP_FRAMES} frames "
            f"(data.video sampling), RGB/255 normalised with mean {list(KINETICS_MEAN)} and std "
            f"{list(KINETICS_STD)}",
            "output": f"logits [N, {len(meta['classes'])}] of the clip (class 0: background); "
            "segments come from sliding the clip over a video (see xvhpc predict)",
            "preprocessing": preprocessing(meta), "arch": meta["arch"],
            "validation": meta.get("validation", {}),
        },
    )  # fmt: skip
    return target
