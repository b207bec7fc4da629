"""Export of a segmentation bundle: TorchScript (a trace: the models are plain tensor in,
tensor out) or ONNX (dynamic batch). Both give the logits N×K×S×S of an ImageNet-normalised
float32 N×3×S×S input; the mask is their argmax over K. The sidecar says so."""

from __future__ import annotations

from pathlib import Path

import torch

from ...models.bundle import Bundle, preprocessing
from ...runtime.compat import onnx_export_kwargs
from ...util import atomic_path, write_json_atomic
from .info import is_instance

OBJECT_OUTPUTS = ("boxes", "labels", "scores", "masks")  # a Mask R-CNN's ONNX outputs, in order


class ExportUnsupported(ValueError):
    """torch cannot export this segmenter to this format."""


def export_segmenter(bundle: Bundle, fmt: str, target: Path) -> Path:
    if is_instance(bundle.meta["arch"]):
        return export_instance_segmenter(bundle, fmt, target)
    size = bundle.size
    example = torch.rand(1, 3, size, size)
    model = bundle.model.eval()
    with atomic_path(target) as tmp, torch.no_grad():
        try:
            if fmt == "torchscript":
                torch.jit.trace(model, example).save(str(tmp))
            elif fmt == "onnx":
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    input_names=["image"],
                    output_names=["logits"],
                    dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                    opset_version=17,
                    **onnx_export_kwargs(),
                )
            else:
                raise ValueError(f"format {fmt!r}: segmenters export to torchscript or onnx")
        except ValueError:
            raise
        except Exception as exc:  # torch raises many kinds for an unsupported export
            raise ExportUnsupported(
                f"{bundle.meta['arch']} does not export to {fmt} here ({type(exc).__name__}: "
                f"{str(exc)[:300]})"
            ) from None
    meta = bundle.meta
    write_json_atomic(
        target.with_name(target.name + ".json"),
        {
            "format": fmt,
            "file": target.name,
            "task": "segment",
            "classes": meta["classes"],
            "input": f"float32 [N, 3, {size}, {size}], ImageNet-normalised (see preprocessing)",
            "output": f"logits [N, {len(meta['classes'])}, {size}, {size}]; the mask is their "
            "argmax over dimension 1 (class index; the training masks' 255 is ignored)",
            "preprocessing": preprocessing(meta),
            "arch": meta["arch"],
            "validation": meta.get("validation", {}),
        },
    )
    return target


def export_instance_segmenter(bundle: Bundle, fmt: str, target: Path) -> Path:
    """A Mask R-CNN as TorchScript (``torch.jit.script``: a trace would freeze the number of
    objects) or ONNX (opset 11, TorchScript-based exporter: one CHW image of any size in,
    boxes, labels, scores and masks out, each of any length)."""
    model = bundle.model.eval()
    with atomic_path(target) as tmp, torch.no_grad():
        try:
            if fmt == "torchscript":
                torch.jit.script(model).save(str(tmp))
            elif fmt == "onnx":
                example = torch.rand(3, bundle.size, bundle.size)
                torch.onnx.export(
                    model, ([example],), str(tmp), opset_version=11, input_names=["image"],
                    output_names=list(OBJECT_OUTPUTS),
                    dynamic_axes={"image": [1, 2], **{o: [0] for o in OBJECT_OUTPUTS}},
                    **onnx_export_kwargs(),
                )  # fmt: skip
            else:
                raise ValueError(f"format {fmt!r}: Mask R-CNN exports to torchscript or onnx")
        except ValueError:
            raise
        except Exception as exc:  # torch raises many kinds for an unsupported export
            raise ExportUnsupported(
                f"{bundle.meta['arch']} does not export to {fmt} here ({type(exc).__name__}: "
                f"{str(exc)[:300]})"
            ) from None
    meta = bundle.meta
    write_json_atomic(
        target.with_name(target.name + ".json"),
        {
            "format": fmt,
            "file": target.name,
            "task": "segment",
            "mode": "instance",
            "classes": meta["classes"],
            "input": "torchscript: a list of float32 CHW images in [0, 1]; onnx: one such image "
            "(`image`); the model normalises and resizes",
            "output": "per image boxes (x0, y0, x1, y1), labels (class index; 0 is background), "
            "scores and masks [n, 1, H, W] (probabilities; an object counts from score 0.5, its "
            "pixels from mask 0.5); torchscript returns (losses, [detections])",
            "preprocessing": preprocessing(meta),
            "arch": meta["arch"],
            "validation": meta.get("validation", {}),
        },
    )
    return target
