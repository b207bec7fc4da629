"""Where a result came from: software versions, host and GPUs, seeds, spec hash and site."""

from __future__ import annotations

import platform
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..rundir import RANKS
from ..util import read_json

if TYPE_CHECKING:
    from ..spec.schema import ExperimentSpec


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def software() -> dict:
    """Versions of xvhpc, python and the numerical stack; CUDA/cuDNN and GPUs when present."""
    info: dict = {
        "xvhpc": _version("xvhpc"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": _version("numpy"),
        "scikit-learn": _version("scikit-learn"),
        "torch": None,
        "torchvision": _version("torchvision"),
        "cuda": None,
        "cudnn": None,
        "gpus": [],
    }
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    if torch.backends.cudnn.is_available():
        info["cudnn"] = str(torch.backends.cudnn.version())
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def training_ranks(train_dir: Path) -> list[dict]:
    """What the training ranks recorded about themselves (rank summaries), without digests."""
    out = []
    for path in sorted((train_dir / RANKS).glob("rank-*.json")):
        summary = read_json(path, {}) or {}
        out.append(
            {k: v for k, v in summary.items() if k not in ("first_batches", "weights_sha256")}
        )
    return out


def collect(plan: dict, spec: ExperimentSpec, train_dir: Path | None = None) -> dict:
    """Provenance of one evaluation: software, this host, seeds, spec hash, site, training ranks."""
    return {
        "software": software(),
        "host": socket.gethostname(),
        "site": plan.get("site"),
        "spec_hash": plan.get("spec_hash"),
        "seeds": {
            "split": spec.data.split.seed,
            "train": spec.train.seed,
            "bootstrap": spec.evaluate.seed,
        },
        "training_ranks": training_ranks(train_dir) if train_dir is not None else [],
    }
