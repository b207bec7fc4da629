"""Site configs: one YAML per cluster, describing its scheduler, launcher and nodes."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..registry import discover
from ..util import parse_walltime
from .schema import Strict

# Site values are written into job scripts (directives, `module load`, `export`, the python
# path): each must be what the scheduler or shell accepts there, on one line, so that no value
# can add a shell line or a #SBATCH/#BSUB directive. env.setup is the exception by design: raw
# shell lines of the site admin (one line per entry).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def _checker(pattern: str | None, what: str) -> AfterValidator:
    compiled = re.compile(pattern) if pattern else None

    def check(value: str) -> str:
        if _CONTROL.search(value):
            raise PydanticCustomError(
                "site_value",
                "must be one line without control characters (newline, NUL …): it is written "
                "into job scripts",
            )
        if compiled is not None and not compiled.fullmatch(value):
            raise PydanticCustomError("site_value", what)
        return value

    return AfterValidator(check)


OneLine = Annotated[str, _checker(None, "")]
Name = Annotated[
    str, _checker(r"[A-Za-z0-9_.-]+", "may contain only letters, digits and _ . - (a name)")
]
ModuleName = Annotated[
    str,
    _checker(r"[A-Za-z0-9_.+-][A-Za-z0-9_.+/-]*", "may contain only letters, digits and _ . + / -"),
]
VariableName = Annotated[
    str,
    _checker(
        r"[A-Za-z_][A-Za-z0-9_]*",
        "is not a shell variable name (letters, digits and _, not starting with a digit)",
    ),
]
Program = Annotated[
    str,
    _checker(
        r"[A-Za-z0-9_.+/-]+",
        "must be a plain path or command name (letters, digits and _ . + / -); a path that "
        "needs the shell (e.g. $HOME) goes in env.setup: export XVHPC_PYTHON=…",
    ),
]
TorchVersion = Annotated[
    str, _checker(r"\d+(\.\d+){1,2}([.+-]?[A-Za-z0-9.]+)?", "must be a version such as 2.0.1")
]
AllocFlags = Annotated[
    str,
    _checker(
        r"[A-Za-z0-9_.:=,+/-]+( [A-Za-z0-9_.:=,+/-]+)*",
        "must be words of letters, digits and _ . : = , + / - separated by single spaces",
    ),
]


def backends(kind: str) -> Any:
    """The scheduler or launcher registry (``kind``: "scheduler" or "launcher"), filled by
    importing every ``xvhpc/backends/<folder>/<kind>.py`` through ``registry.discover``: the
    backends import the spec, so the spec names no backend module (the import goes one way)."""
    name = f"{kind.upper()}S"  # each such module imports the registry it fills, by this name
    modules = discover("xvhpc.backends", kind).values()
    return next(getattr(m, name) for m in modules if hasattr(m, name))


class NodeShape(Strict):
    cores: int = Field(ge=1)
    gpus: int = Field(0, ge=0)
    gpu_model: OneLine | None = None
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
    # jobs a user may have queued at once, array elements counted (Summit batch: 100); more
    # are rejected at submit time, so compile refuses a plan that needs more
    max_queued_jobs: int | None = Field(None, ge=1)
    chaining: bool = True  # False: dependent jobs are not allowed (Summit debug)
    description: OneLine = ""

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


ImageRef = Annotated[
    str,
    _checker(
        r"[A-Za-z0-9_.:/@+#-]+",
        "must be an image path or reference (letters, digits and _ . : / @ + # -)",
    ),
]
AbsPath = Annotated[
    str, _checker(r"/[A-Za-z0-9_.+/-]*", "must be an absolute path (letters, digits, _ . + / -)")
]


class Container(Strict):
    """Every step runs in this image (NGC images are the norm on GPU clusters). The run
    directory, the data source and ``binds`` are mounted at their own paths; ``env.python`` is
    the Python inside the image. pyxis needs the srun launcher."""

    runtime: Literal["apptainer", "singularity", "charliecloud", "podman-hpc", "pyxis"]
    image: ImageRef  # a .sif file, a Charliecloud image directory, or a registry reference
    binds: list[AbsPath] = Field(default_factory=list)


class Environment(Strict):
    container: Container | None = None
    modules: list[ModuleName] = Field(default_factory=list)
    # raw shell lines, written verbatim (the site admin's, by design); one line per entry
    setup: list[OneLine] = Field(default_factory=list)
    variables: dict[VariableName, OneLine] = Field(default_factory=dict)
    python: Program = "python3"
    # the torch the site's environment brings (e.g. its Open-CE module); `validate` warns below
    # xvhpc's minimum (runtime/compat.py MIN_TORCH)
    torch: TorchVersion | None = None


class NodeLocal(Strict):
    """Node-local storage for staging (Summit: ``/mnt/bb/$USER`` with ``-alloc_flags NVME``)."""

    # $VARS are expanded by xvhpc on each node at run time (the script quotes the path)
    path: Annotated[
        str,
        _checker(
            r"/[A-Za-z0-9_.+/${}-]*", "must be an absolute path (letters, digits, _ . + / $ { } -)"
        ),
    ]
    alloc_flags: AllocFlags | None = None  # LSF -alloc_flags that make it exist (Summit: NVME)


class SweepPolicy(Strict):
    mode: Literal["array", "packed"] = "array"
    max_eligible_jobs: int | None = Field(None, ge=1)
    # elements of one job array (Slurm MaxArraySize; LSF MAX_JOB_ARRAY_SIZE, default 1000)
    max_array_size: int = Field(1001, ge=1)


class RequeuePolicy(Strict):
    signal: Literal["USR1", "USR2", "TERM"] = "USR1"
    seconds_before: int = Field(120, ge=10)


GpuBind = Annotated[
    str,
    _checker(
        r"(verbose,)?(none|closest|single:[0-9]+|per_task:[0-9]+|map_gpu:[0-9,]+|mask_gpu:[0-9a-fx,]+)",
        "must be none, closest, single:N, per_task:N, map_gpu:LIST or mask_gpu:LIST",
    ),
]
CpuBind = Annotated[
    str,
    _checker(
        r"(verbose,)?(none|cores|threads|sockets|ldoms|rank|map_cpu:[0-9,]+|mask_cpu:[0-9a-fx,]+)",
        "must be none, cores, threads, sockets, ldoms, rank, map_cpu:LIST or mask_cpu:LIST",
    ),
]


class Binding(Strict):
    """How srun binds a rank's GPUs and CPUs (srun(1) ``--gpu-bind``, ``--cpu-bind``,
    ``--threads-per-core``). Unset: Slurm's defaults, and every rank sees all of the job's GPUs
    on its node (CUDA IPC/NVLink between ranks). ``closest`` suits Frontier-style nodes."""

    gpu: GpuBind | None = None
    cpu: CpuBind | None = None
    threads_per_core: int | None = Field(None, ge=1, le=8)


class OldLsfGroup(Strict):
    """The old ``lsf:`` group, now ``scheduler_options`` (backends/lsf/options.py): classic-LSF
    features a real IBM LSF has and OpenLava lacks."""

    terminate_invalid_dependency: bool = False  # bsub -ti: end a job whose done() cannot hold
    warning_action: bool = False  # bsub -wa SIGNAL -wt MIN: requeue.seconds_before is honoured


class JobOptions(Strict):
    """What a centre's jobs need besides a queue and an account (sbatch(1), bsub). Perlmutter
    shape: no partition, ``constraint: gpu``, ``qos: regular``; the CPU steps (ingest, merge,
    report) on ``cpu_queue``/``cpu_constraint`` instead of idle GPU nodes."""

    qos: Name | None = None  # Slurm --qos (a spec's resources.qos wins)
    constraint: AllocFlags | None = None  # Slurm --constraint (node features)
    reservation: Name | None = None  # Slurm --reservation, LSF -U (a spec's wins)
    exclusive: bool = False  # whole nodes: Slurm --exclusive, LSF -x
    mem_per_gpu_gb: int | None = Field(None, ge=1)  # Slurm --mem-per-gpu (GPU steps)
    cpu_queue: Name | None = None  # partition/queue of the steps that use no GPU
    cpu_constraint: AllocFlags | None = None  # their --constraint (Perlmutter: cpu)
    cpu_account: Name | None = None  # their account where CPU hours are a pool of their own
    cpu_qos: Name | None = None  # their --qos (Perlmutter: shared, a part of a node)


# old flat key → (group, key in the backend's options model): still accepted, with a warning
MOVED: dict[str, tuple[str, str]] = {
    "gpu_request": ("scheduler_options", "gpu_request"),  # slurm
    "alloc_flags": ("scheduler_options", "alloc_flags"),  # lsf
    "lsf.terminate_invalid_dependency": ("scheduler_options", "terminate_invalid_dependency"),
    "lsf.warning_action": ("scheduler_options", "warning_action"),
    "jsrun_mode": ("launcher_options", "mode"),  # jsrun
    "srun_mpi": ("launcher_options", "mpi"),  # srun
    "binding": ("launcher_options", "binding"),  # srun
}


class SiteConfig(Strict):
    name: Name
    description: OneLine = ""
    architecture: Literal["x86_64", "ppc64le", "aarch64"]
    scheduler: str  # a name in xvhpc.backends.base.SCHEDULERS
    launcher: str  # a name in xvhpc.backends.base.LAUNCHERS
    node: NodeShape
    max_nodes: int = Field(1, ge=1)
    queues: dict[Name, Queue] = Field(default_factory=dict)
    default_queue: Name | None = None
    account_required: bool = False
    default_account: Name | None = None
    # the scheduler's and the launcher's own options, declared in backends/<name>/options.py
    scheduler_options: dict[str, Any] = Field(default_factory=dict)
    launcher_options: dict[str, Any] = Field(default_factory=dict)
    job: JobOptions = Field(default_factory=JobOptions)
    # old flat places of backend options (MOVED): still read, with a warning naming the new one
    gpu_request: Literal["gpus_per_node", "gres"] = "gpus_per_node"
    alloc_flags: AllocFlags | None = None
    jsrun_mode: Literal["rank_per_gpu", "all_gpus_per_rank"] = "all_gpus_per_rank"
    binding: Binding = Field(default_factory=Binding)
    lsf: OldLsfGroup = Field(default_factory=OldLsfGroup)
    srun_mpi: Name | None = None
    node_local: NodeLocal | None = None
    env: Environment = Field(default_factory=Environment)
    sweep: SweepPolicy = Field(default_factory=SweepPolicy)
    requeue: RequeuePolicy = Field(default_factory=RequeuePolicy)
    extra_directives: list[OneLine] = Field(default_factory=list)
    _parsed: dict[str, Any] = PrivateAttr(default_factory=dict)
    # warnings of loading (old keys), file:line first: shown by ``validate`` and ``compile``
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @field_validator("scheduler", "launcher")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        """Names come from the registries, so a new backend needs no edit here."""
        names = backends(str(info.field_name)).names()
        if value not in names:
            raise PydanticCustomError(
                "literal_error",
                "Input should be {expected}",
                {"expected": ", ".join(repr(n) for n in names)},
            )
        return value

    @model_validator(mode="after")
    def _container_launcher(self) -> SiteConfig:
        """pyxis is an srun plugin: the launcher says whether it can run it."""
        box = self.env.container
        if box is not None and box.runtime == "pyxis":
            if not backends("launcher").get(self.launcher).runs_pyxis:
                raise ValueError(
                    "env.container.runtime pyxis is an srun plugin: launcher must be srun"
                )
        return self

    @model_validator(mode="after")
    def _options(self, info: ValidationInfo) -> SiteConfig:
        """The backends' options, from their groups and the old flat keys (a group wins). A
        group the backend refuses goes to ``validate_model`` (its ``deferred`` context), which
        names file:line:key and the choices as for every key."""
        deferred = (info.context or {}).get("deferred")
        for kind in ("scheduler", "launcher"):
            try:
                self._parsed[kind] = self._backend_options(kind)
            except ValidationError as exc:
                if deferred is None:
                    raise ValueError(f"{kind}_options: {exc}") from None
                deferred.append(
                    (f"{kind}_options", backends(kind).get(getattr(self, kind)).options, exc)
                )
        return self

    def _backend_options(self, kind: str) -> Any:
        model = backends(kind).get(getattr(self, kind)).options
        group = f"{kind}_options"
        values = {
            new: value
            for new, value in self._moved_values(group)
            if model and new in model.model_fields
        }
        values.update(getattr(self, group))
        if model is None:  # takes none: any key is unknown
            Strict.model_validate(getattr(self, group))
            return None
        return model.model_validate(values)

    def _moved_values(self, group: str) -> list[tuple[str, Any]]:
        """(new key, value) of the old flat keys of ``group`` that this site sets."""
        found = []
        for old, (where, new) in MOVED.items():
            top, _, sub = old.partition(".")
            if where == group and (old, f"{where}.{new}") in self.moved_keys():
                found.append((new, getattr(getattr(self, top), sub) if sub else getattr(self, top)))
        return found

    @property
    def warnings(self) -> list[str]:
        """What loading the site warned about (old keys), file:line first."""
        return list(self._warnings)

    def options(self, kind: str) -> Any:
        """The site's options of its scheduler or launcher (``kind``), as the backend declares
        them (``None``: it takes none)."""
        return self._parsed[kind]

    def moved_keys(self) -> list[tuple[str, str]]:
        """(old key, new key) of each backend option this site sets at its old flat place."""
        found = []
        for old, (group, new) in MOVED.items():
            top, _, sub = old.partition(".")
            if top in self.model_fields_set and (
                not sub or sub in getattr(self, top).model_fields_set
            ):
                found.append((old, f"{group}.{new}"))
        return found

    @property
    def local(self) -> bool:
        """True for a site whose scripts xvhpc runs itself (no scheduler, no queue)."""
        return bool(backends("scheduler").get(self.scheduler).runs_here)

    @property
    def whole_nodes(self) -> bool:
        """True where jobs are given and charged whole nodes (the scheduler's way, CSM, or the
        site's ``job.exclusive``)."""
        return bool(backends("scheduler").get(self.scheduler).whole_nodes or self.job.exclusive)

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
    dirs.append(Path(__file__).resolve().parents[2] / "site_configs")  # a checkout
    dirs.append(Path(__file__).resolve().parents[1] / "site_configs")  # a wheel (setup.py)
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
