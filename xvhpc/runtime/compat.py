"""Version shims: one code path for torch 2.0.1 (Summit's newest Open-CE) and the x86 torch.

Every torch API whose spelling changed after 2.0.1 goes through here, so the call sites stay
one-liners and ``tests/unit/runtime/test_compat.py`` (run in ``.venv-torch20`` by CI) covers them all.
Torch is imported inside the functions: the login side reads ``MIN_TORCH`` without it.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from typing import Any

# The oldest torch xvhpc runs on; pyproject.toml's non-x86 marker says the same (a test checks).
MIN_TORCH = "2.0.1"
MIN_TORCHVISION = "0.15.2"


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.0.1+cu117"`` → ``(2, 0, 1)``: local and pre-release suffixes are ignored."""
    parts = re.match(r"\d+(?:\.\d+)*", version.strip())
    if parts is None:
        raise ValueError(f"not a version number: {version!r}")
    return tuple(int(p) for p in parts.group(0).split("."))


def below_minimum(version: str, minimum: str = MIN_TORCH) -> bool:
    """True when ``version`` is older than ``minimum`` (missing parts count as 0)."""
    have, need = version_tuple(version), version_tuple(minimum)
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) < need + (0,) * (width - len(need))


def amp_dtype(amp: bool | str, device_type: str) -> Any:
    """The autocast dtype ``train.amp`` asks for on this device; None: full precision.

    ``true``/``float16``: float16 on CUDA only (torch 2.0.1 has no CPU float16 autocast).
    ``bfloat16``: on CUDA and CPU, no loss scaling needed; on a CPU without bf16 units it is
    10-50x slower than float32 (measured here), so it is opt-in, never the CPU default.
    """
    import torch

    if amp == "bfloat16":
        return torch.bfloat16
    if amp and device_type == "cuda":
        return torch.float16
    return None


def autocast(device_type: str, dtype: Any) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or nothing when it is None (a disabled autocast with
    float16 on CPU still warns on every step in torch 2.0.1)."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def grad_scaler(enabled: bool) -> Any:
    """A CUDA GradScaler: ``torch.amp.GradScaler("cuda")`` from torch 2.3 on (the
    ``torch.cuda.amp`` one warns there), ``torch.cuda.amp.GradScaler`` before."""
    import torch

    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def onnx_export_kwargs() -> dict[str, Any]:
    """``dynamo=False`` where ``torch.onnx.export`` has it (2.5+; the default flips to the
    dynamo exporter in 2.9); torch 2.0.1 has only the TorchScript exporter and no such key."""
    import torch

    params = inspect.signature(torch.onnx.export).parameters
    return {"dynamo": False} if "dynamo" in params else {}


def site_torch_warning(site_name: str, declared: str | None) -> str | None:
    """Why a site's declared torch (``env.torch``) is too old for xvhpc, or None when it is not
    (or the site declares none). Login side: no torch import."""
    if declared is None or not below_minimum(declared):
        return None
    return (
        f"site {site_name}: env.torch is {declared}, older than torch {MIN_TORCH}, the oldest "
        f"xvhpc runs on (torchvision {MIN_TORCHVISION}); load a newer module there, or build "
        "an environment as in envs/summit-opence.sh"
    )
