"""Export of a detection bundle: TorchScript (``torch.jit.script``: torchvision's detectors are
scriptable; a trace would freeze the number of boxes) or ONNX (torchvision's ONNX path: one
image per call). The sidecar says what goes in and comes out."""

from __future__ import annotations

from pathlib import Path

import torch

from ...models.bundle import Bundle, preprocessing
from ...runtime.compat import onnx_export_kwargs
from ...util import atomic_path, write_json_atomic


class ExportUnsupported(ValueError):
    """torchvision cannot export this detector to this format."""


def export_detector(bundle: Bundle, fmt: str, target: Path) -> Path:
    size = bundle.size
    example = torch.rand(3, size, size)
    with atomic_path(target) as tmp:
        try:
            if fmt == "torchscript":
                torch.jit.script(bundle.model).save(str(tmp))
            else:
                torch.onnx.export(
                    bundle.model,
                    ([example],),
                    str(tmp),
                    input_names=["image"],
                    output_names=_output_names(bundle.model, example),
                    dynamic_axes={"boxes": {0: "n"}, "labels": {0: "n"}, "scores": {0: "n"}},
                    opset_version=17,
                    **onnx_export_kwargs(),
                )
        except Exception as exc:  # torchvision raises many kinds for an unsupported export
            raise ExportUnsupported(
                f"{bundle.meta['arch']} does not export to {fmt} here ({type(exc).__name__}: "
                f"{str(exc)[:300]}); see the README's object detection section"
            ) from None
    meta = bundle.meta
    write_json_atomic(
        target.with_name(target.name + ".json"),
        {
            "format": fmt,
            "file": target.name,
            "task": "detect",
            "classes": meta["classes"],
            "input": {
                "torchscript": "a list of float32 CHW images in [0, 1] (the model normalises)",
                "onnx": f"one float32 image [3, {size}, {size}] in [0, 1] (the model normalises)",
            }[fmt],
            "output": "boxes (x0, y0, x1, y1 in input pixels), labels (class index + 1; "
            "0 is background), scores; TorchScript returns (losses, detections)",
            "preprocessing": preprocessing(meta),  # detectors normalise inside
            "arch": meta["arch"],
            "threshold": meta.get("threshold", 0.0),
            "validation": meta.get("validation", {}),
        },
    )
    return target


def _output_names(model: torch.nn.Module, example: torch.Tensor) -> list[str]:
    """The detector's output keys in its own order (FCOS, RetinaNet, SSD: boxes, scores,
    labels; Faster R-CNN: boxes, labels, scores): ONNX outputs are positional."""
    with torch.no_grad():
        return list(model([example])[0])
