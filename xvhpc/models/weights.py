"""The offline pretrained-weights cache: filled on a login node, read on compute nodes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..tasks.classify.info import ARCHITECTURES
from .safeload import load_tensors

# torchvision's ImageNet weights per architecture (enum names in torchvision.models)
TORCHVISION_WEIGHTS = {
    "googlenet": "GoogLeNet_Weights",
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
    "densenet121": "DenseNet121_Weights",
    "mobilenet_v3_large": "MobileNet_V3_Large_Weights",
    "efficientnet_b0": "EfficientNet_B0_Weights",
}


class MissingWeights(FileNotFoundError):
    """Pretrained weights are not in the cache; the message has the command that fetches them."""


def cache_dir() -> Path:
    """$XVHPC_WEIGHTS, else ~/.cache/xvhpc/weights (put it on a shared filesystem on clusters)."""
    return Path(os.environ.get("XVHPC_WEIGHTS") or Path.home() / ".cache" / "xvhpc" / "weights")


# task: detect: torchvision's COCO weights of each detector (torchvision.models.detection)
DETECTION_WEIGHTS = {
    "fasterrcnn_resnet50_fpn_v2": "FasterRCNN_ResNet50_FPN_V2_Weights",
    "fasterrcnn_mobilenet_v3_large_fpn": "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
    "retinanet_resnet50_fpn_v2": "RetinaNet_ResNet50_FPN_V2_Weights",
    "ssd300_vgg16": "SSD300_VGG16_Weights",
    "ssdlite320_mobilenet_v3_large": "SSDLite320_MobileNet_V3_Large_Weights",
    "fcos_resnet50_fpn": "FCOS_ResNet50_FPN_Weights",
}
CACHEABLE = (*ARCHITECTURES, *DETECTION_WEIGHTS)


def _weights_enum(arch: str):
    import torchvision.models as tvm

    if arch in DETECTION_WEIGHTS:
        return getattr(tvm.detection, DETECTION_WEIGHTS[arch]).COCO_V1
    return getattr(tvm, TORCHVISION_WEIGHTS[arch]).IMAGENET1K_V1


def cached_file(arch: str) -> Path:
    """Where the weights of ``arch`` live in the cache (torchvision's file name)."""
    url = _weights_enum(arch).url
    return cache_dir() / url.rsplit("/", 1)[-1]


def load_cached_state_dict(arch: str) -> dict:
    """ImageNet (detectors: COCO) weights from the cache only; never the network."""
    path = cached_file(arch)
    if not path.is_file():
        raise MissingWeights(
            f"pretrained ImageNet weights for {arch} are not in the cache {cache_dir()} "
            f"(compute nodes have no internet). On a login node run:  xvhpc weights fetch {arch}"
            f"  (with XVHPC_WEIGHTS={cache_dir()} set the same way as in the job)"
        )
    return load_tensors(path)


def fetch(arch: str) -> Path:
    """Download ``arch``'s weights into the cache (login node, with internet)."""
    from torch.hub import load_state_dict_from_url

    cache_dir().mkdir(parents=True, exist_ok=True)
    load_state_dict_from_url(
        _weights_enum(arch).url, model_dir=str(cache_dir()), progress=True, check_hash=True
    )
    return cached_file(arch)


def main(args: argparse.Namespace) -> int:
    if args.action == "list":
        for arch in CACHEABLE:
            path = cached_file(arch)
            print(f"{arch:20s} {'cached' if path.is_file() else 'missing':8s} {path}")
        return 0
    if args.action == "path":
        print(cache_dir())
        return 0
    if args.arch not in CACHEABLE:
        print(
            f"xvhpc: error: unknown arch {args.arch!r} (valid: {', '.join(CACHEABLE)})",
            file=sys.stderr,
        )
        return 2
    try:
        print(f"fetched {fetch(args.arch)}")
    except Exception as exc:
        print(f"xvhpc: error: could not fetch {args.arch} weights: {exc}", file=sys.stderr)
        return 1
    return 0
