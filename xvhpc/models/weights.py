"""The offline pretrained-weights cache: filled on a login node, read on compute nodes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..registry import load_task, task_infos
from .safeload import load_tensors


class MissingWeights(FileNotFoundError):
    """Pretrained weights are not in the cache; the message has the command that fetches them."""


def cache_dir() -> Path:
    """$XVHPC_WEIGHTS, else ~/.cache/xvhpc/weights (put it on a shared filesystem on clusters)."""
    return Path(os.environ.get("XVHPC_WEIGHTS") or Path.home() / ".cache" / "xvhpc" / "weights")


def cacheable() -> dict[str, str]:
    """Every task's cacheable weights: arch → torchvision weights enum member (each task's
    ``weights`` hook), in task order."""
    return {arch: name for task in task_infos() for arch, name in load_task(task).weights().items()}


def _weights_enum(arch: str) -> Any:
    """The torchvision weights enum member of ``arch`` ("ResNet18_Weights.IMAGENET1K_V1",
    "detection.FCOS_ResNet50_FPN_Weights.COCO_V1": looked up under torchvision.models)."""
    import torchvision.models as tvm

    found: Any = tvm
    for part in cacheable()[arch].split("."):
        found = getattr(found, part)
    return found


def cached_file(arch: str) -> Path:
    """Where the weights of ``arch`` live in the cache (torchvision's file name)."""
    url = _weights_enum(arch).url
    return cache_dir() / url.rsplit("/", 1)[-1]


def load_cached_state_dict(arch: str) -> dict:
    """Pretrained weights (ImageNet; detectors COCO; video models Kinetics-400) from the cache
    only; never the network."""
    path = cached_file(arch)
    if not path.is_file():
        raise MissingWeights(
            f"pretrained weights for {arch} ({cacheable()[arch].rsplit('.', 1)[-1]}) are not "
            f"in the cache {cache_dir()} "
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``xvhpc weights``'s arguments."""
    p.add_argument("action", choices=["fetch", "list", "path"])
    p.add_argument("arch", nargs="?")


def main(args: argparse.Namespace) -> int:
    """``xvhpc weights list|path|fetch ARCH``: what the cache holds, where, and filling it."""
    known = cacheable()
    if args.action == "list":
        for arch in known:
            path = cached_file(arch)
            print(f"{arch:20s} {'cached' if path.is_file() else 'missing':8s} {path}")
        return 0
    if args.action == "path":
        print(cache_dir())
        return 0
    if args.arch not in known:
        print(
            f"xvhpc: error: unknown arch {args.arch!r} (valid: {', '.join(known)})",
            file=sys.stderr,
        )
        return 2
    try:
        print(f"fetched {fetch(args.arch)}")
    except Exception as exc:
        print(f"xvhpc: error: could not fetch {args.arch} weights: {exc}", file=sys.stderr)
        return 1
    return 0
