"""Site configs: one YAML per cluster, describing its scheduler, launcher and nodes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..util import parse_walltime
from .schema import Strict


class NodeShape(Strict):
    cores: int = Field(ge=1)
    gpus: int = Field(0, ge=0)
    gpu_model: str | None = None
    memory_gb: float = Field(gt=0)
    smt: int = Field(1, ge=1, le=8)


class WalltimeBin(Strict):
    """Jobs of up to ``max_nodes`` nodes may run ``max_walltime`` (Summit's node-count bins)."""

    max_nodes: int = Field(ge=1)
    max_walltime: str

    @field_validator("max_walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        parse_walltime(value)
        return value


class Queue(Strict):
    max_walltime: str
    max_nodes: int = Field(ge=1)
    min_nodes: int = Field(1, ge=1)
    bins: list[WalltimeBin] = Field(default_factory=list)  # walltime limit by job size
    max_running_jobs: int | None = Field(None, ge=1)  # per user (Summit debug: 1)
    chaining: bool = True  # False: dependent jobs are not allowed (Summit debug)
    description: str = ""

    @field_validator("max_walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        parse_walltime(value)
        return value

    def walltime_limit(self, nodes: int) -> int:
        """Seconds a job of ``nodes`` nodes may run in this queue."""
        for b in sorted(self.bins, key=lambda b: b.max_nodes):
            if nodes <= b.max_nodes:
                return parse_walltime(b.max_walltime)
        return parse_walltime(self.max_walltime)


class Environment(Strict):
    modules: list[str] = Field(default_factory=list)
    setup: list[str] = Field(default_factory=list)  # shell lines, written verbatim (site admin's)
    variables: dict[str, str] = Field(default_factory=dict)
    python: str = "python3"
    # the torch the site's environment brings (e.g. its Open-CE module); `validate` warns below
    # xvhpc's minimum (runtime/compat.py MIN_TORCH)
    torch: str | None = Field(None, pattern=r"^\d+(\.\d+){1,2}([.+-]?[A-Za-z0-9.]+)?$")


class SweepPolicy(Strict):
    mode: Literal["array", "packed"] = "array"
    max_eligible_jobs: int | None = Field(None, ge=1)
    max_array_size: int = Field(1001, ge=1)


class RequeuePolicy(Strict):
    signal: Literal["USR1", "USR2", "TERM"] = "USR1"
    seconds_before: int = Field(120, ge=10)


class SiteConfig(Strict):
    name: str
    description: str = ""
    architecture: Literal["x86_64", "ppc64le", "aarch64"]
    scheduler: str  # a name in xvhpc.schedulers.SCHEDULERS
    launcher: str  # a name in xvhpc.launchers.LAUNCHERS
    node: NodeShape
    max_nodes: int = Field(1, ge=1)
    queues: dict[str, Queue] = Field(default_factory=dict)
    default_queue: str | None = None
    account_required: bool = False
    default_account: str | None = None
    gpu_request: Literal["gpus_per_node", "gres"] = "gpus_per_node"
    alloc_flags: str | None = None  # LSF -alloc_flags
    jsrun_mode: Literal["rank_per_gpu", "all_gpus_per_rank"] = "rank_per_gpu"
    srun_mpi: str | None = None  # e.g. pmix
    env: Environment = Field(default_factory=Environment)
    sweep: SweepPolicy = Field(default_factory=SweepPolicy)
    requeue: RequeuePolicy = Field(default_factory=RequeuePolicy)
    extra_directives: list[str] = Field(default_factory=list)

    @field_validator("scheduler", "launcher")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        """Names come from the registries, so a new backend needs no edit here."""
        from ..launchers import LAUNCHERS  # imported late: backends import this module
        from ..schedulers import SCHEDULERS

        names = (SCHEDULERS if info.field_name == "scheduler" else LAUNCHERS).names()
        if value not in names:
            raise PydanticCustomError(
                "literal_error",
                "Input should be {expected}",
                {"expected": ", ".join(repr(n) for n in names)},
            )
        return value

    @property
    def local(self) -> bool:
        """True for a site whose scripts xvhpc runs itself (no scheduler, no queue)."""
        from ..schedulers import SCHEDULERS

        return SCHEDULERS.get(self.scheduler).runs_here

    @model_validator(mode="after")
    def _queues(self) -> SiteConfig:
        if self.default_queue is not None and self.default_queue not in self.queues:
            raise ValueError(f"default_queue {self.default_queue!r} is not one of the queues")
        return self


LOCAL_SITE_YAML = """\
name: local
description: This machine, no scheduler; training under torchrun with local processes (built in)
architecture: x86_64
scheduler: local
launcher: torchrun
node: {cores: 2, gpus: 0, memory_gb: 8}
max_nodes: 1
"""


def site_dirs() -> list[Path]:
    """Where site configs are looked up, in order."""
    dirs = [Path(p) for p in os.environ.get("XVHPC_SITE_PATH", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "site_configs")
    dirs.append(Path(__file__).resolve().parents[2] / "site_configs")
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def known_sites() -> dict[str, Path | None]:
    """Site name → file (None for the built-in local site)."""
    sites: dict[str, Path | None] = {"local": None}
    for directory in reversed(site_dirs()):
        for file in sorted(directory.glob("*.yaml")):
            sites[file.stem] = file
    return sites
