"""Mask AP of instance segmentation: pycocotools' COCOeval with ``iouType="segm"`` (AP over IoU
.5:.95 and at .5, per class) with bootstrap intervals over images or groups, through the same
task-neutral kernel as detection's box AP (``stats/cocoap.py``).

The truth comes from each image's instance-id map and class table (``instances.py``): an
object per id, its mask as RLE; the ignored pixels (255: crowd regions, letterbox padding) are
one crowd annotation per class, so a detection that lies in them counts neither way."""

from __future__ import annotations

import numpy as np

from ...stats.cocoap import ap_figures, run_cocoeval
from .info import IGNORE
from .instances import instance_targets


def _rle(binary: np.ndarray) -> dict:
    from pycocotools import mask as coco

    code = coco.encode(np.asfortranarray(binary.astype(np.uint8)))
    return {"size": [int(v) for v in code["size"]], "counts": code["counts"].decode()}


def _xywh(box: np.ndarray) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def truth_annotations(i: int, ids: np.ndarray, table: np.ndarray, k: int) -> list[dict]:
    """COCO annotations of image ``i``: its objects, then its ignored region as a crowd of
    every object class (1..k-1)."""
    found = instance_targets(ids, table)
    out = [
        {"image_id": i, "category_id": int(c), "segmentation": _rle(m), "area": float(m.sum()),
         "bbox": _xywh(b), "iscrowd": 0}
        for b, c, m in zip(found["boxes"], found["labels"], found["masks"], strict=True)
    ]  # fmt: skip
    ignored = ids == IGNORE
    if ignored.any():
        ys, xs = np.nonzero(ignored)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
        crowd = {"image_id": i, "segmentation": _rle(ignored), "area": float(ignored.sum()),
                 "bbox": _xywh(box), "iscrowd": 1}  # fmt: skip
        out += [{**crowd, "category_id": c} for c in range(1, k)]
    return out


def found_annotations(i: int, masks: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> list:
    """COCO results of image ``i``: each predicted object's mask (probability ≥ .5) as RLE."""
    return [
        {"image_id": i, "category_id": int(c), "segmentation": _rle(m >= 0.5), "score": float(s)}
        for m, c, s in zip(masks, labels, scores, strict=True)
    ]


def _size(annotations: list[dict]) -> tuple[int, int]:
    """An image's (height, width) from its annotations' RLE (1×1 for an image with none: no
    mask of it is ever decoded)."""
    for a in annotations:
        return int(a["segmentation"]["size"][0]), int(a["segmentation"]["size"][1])
    return 1, 1


def mask_ap(
    truth: list[list[dict]], found: list[list[dict]], classes: list[str],
    groups: list | None = None, resamples: int = 2000, seed: int = 0, unit: str | None = None,
) -> dict:  # fmt: skip
    """metrics.json's ``mask_map`` (AP@[.5:.95]), ``mask_map50`` and ``per_class_mask_ap``
    (classes 1.., background has no objects), each ``{value, ci_low, ci_high}``, and the count
    of true ``objects``; ``truth``/``found``: each image's annotations (the functions above)."""
    n = len(truth)
    objects = classes[1:]
    flat_truth = [a for image in truth for a in image]
    sizes = [_size(image + f) for image, f in zip(truth, found, strict=True)]
    ev = run_cocoeval(n, objects, flat_truth, [a for image in found for a in image], "segm", sizes)
    figures, _, sampler = ap_figures(ev, n, objects, groups, resamples, seed, unit)
    return {
        "mask_map": figures["map"],
        "mask_map50": figures["map50"],
        "per_class_mask_ap": figures["per_class_ap"],
        "objects": sum(1 for a in flat_truth if not a["iscrowd"]),
        "mask_ap_bootstrap": {"resamples": resamples if n else 0, "unit": sampler.unit},
    }
