"""LSF's site options (``scheduler_options``, both dialects) and jsrun's resource-set layout
(``launcher_options``)."""

from __future__ import annotations

from typing import Literal

from ...spec.site import AllocFlags
from ..options import Options


class LsfOptions(Options):
    """``-alloc_flags`` (CSM), and the classic-LSF features a real IBM LSF has and OpenLava
    lacks (it misreads ``-wa USR1`` as ``-w a``): off by default, on for a site whose LSF is
    IBM's (issue 22 N13)."""

    alloc_flags: AllocFlags | None = None  # bsub -alloc_flags (Summit: smt4)
    terminate_invalid_dependency: bool = False  # bsub -ti: end a job whose done() cannot hold
    warning_action: bool = False  # bsub -wa SIGNAL -wt MIN: requeue.seconds_before is honoured


class JsrunOptions(Options):
    # all GPUs of a node in one resource set: CUDA IPC/NVLink between its ranks (OLCF's advice)
    mode: Literal["rank_per_gpu", "all_gpus_per_rank"] = "all_gpus_per_rank"
