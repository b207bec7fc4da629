"""A Plan and its Steps: pure data (written as plan.json). A leaf of ``plan/``: the backends
render Steps, and the plan builder (``model.py``) imports the backends, so these live apart."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..util import format_hms, parse_walltime

if TYPE_CHECKING:
    from ..spec.site import Queue


@dataclass(frozen=True)
class Step:
    """One job (or job array) of the pipeline."""

    name: str
    args: tuple[str, ...]  # xvhpc sub-command and flags; "{index}" marks the array/point index
    walltime: str  # per run of the command (per sweep point when packed)
    after: tuple[str, ...] = ()
    # True: starts once its predecessors ended, however (Slurm afterany, LSF ended()); evaluate
    # after a sweep scores the points that finished and lists the failed ones (issue 22 N10)
    after_ended: bool = False
    array: int = 0  # > 0: run once per index 0..array-1
    max_concurrent: int | None = None  # array slot limit; packed: points per wave
    packed: bool = False  # the array runs as concurrent launcher steps in one allocation
    waves: int = 1  # packed: waves of max_concurrent points each packed job runs
    nodes: int = 1  # per index
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1  # physical cores per task
    distributed: bool = False  # launched through the site's launcher
    requeue: bool = False
    stage_data: bool = False  # copy the shards to node-local storage first (one task per node)
    mpi: bool = False  # the ranks are an MPI job (Horovod): srun --mpi=pmix where none is set
    stages: tuple[Step, ...] = ()  # single allocation: these steps run one after another

    @property
    def allocation_nodes(self) -> int:
        """Nodes the scheduler is asked for (packed arrays share one allocation)."""
        if self.stages:
            return max(s.allocation_nodes for s in self.stages)
        if self.packed and self.array:
            return self.nodes * self.per_wave
        return self.nodes

    @property
    def per_wave(self) -> int:
        """Packed: points that run at once in one allocation."""
        return min(self.array, self.max_concurrent or self.array)

    @property
    def pack_jobs(self) -> int:
        """Packed: allocations (array elements) the points are spread over."""
        return math.ceil(self.array / (self.per_wave * self.waves)) if self.packed else 0

    @property
    def job_seconds(self) -> int:
        """Walltime one job (or array element) asks for."""
        if self.stages:
            return sum(s.job_seconds for s in self.stages)
        waves = (
            math.ceil(min(self.array, self.per_wave * self.waves) / self.per_wave)
            if self.packed
            else 1
        )
        return waves * parse_walltime(self.walltime)

    @property
    def job_walltime(self) -> str:
        return format_hms(self.job_seconds)

    @property
    def scheduler_array(self) -> int:
        """Elements of the scheduler-level array (0: a plain job)."""
        if self.packed:
            return self.pack_jobs if self.pack_jobs > 1 else 0
        return self.array


@dataclass
class Plan:
    """The whole pipeline for one spec on one site."""

    name: str
    job_label: str
    site: str
    spec_file: str
    spec_hash: str
    run_dir: str
    points: list[dict[str, Any]]
    queue: str | None = None
    account: str | None = None
    max_requeues: int = 3
    data_source: str = ""
    notify: bool = False
    qos: str | None = None
    reservation: str | None = None
    stage_dir: str | None = None  # node-local shard copies ($VARS expanded on each node)
    steps: list[Step] = field(default_factory=list)

    @property
    def token(self) -> str:
        """Tags this run's jobs, so a retried submit can find what a lost reply submitted."""
        return "xvhpc-" + hashlib.sha256(self.run_dir.encode()).hexdigest()[:12]

    def node_hours(self) -> float:
        """Upper bound on node-hours if every job ran to its walltime (packing, waves and a
        single allocation included: each job is counted as what it asks for)."""
        total = 0.0
        for s in self.steps:
            jobs = s.pack_jobs if s.packed else max(1, s.array)
            runs = 1 + self.max_requeues if s.requeue else 1  # every requeue runs again (N16)
            total += jobs * runs * s.allocation_nodes * s.job_seconds / 3600
        return round(total, 2)

    @property
    def queued_jobs(self) -> int:
        """Jobs the plan puts in the queue at once, array elements counted (per-user caps)."""
        return sum(max(1, s.scheduler_array) for s in self.steps)

    def over_walltime(self, queue: Queue) -> list[tuple[Step, int]]:
        """Steps whose job asks more than ``queue`` allows for its size, with that limit."""
        limits = [(s, queue.walltime_limit(s.allocation_nodes)) for s in self.steps]
        return [(s, limit) for s, limit in limits if s.job_seconds > limit]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["node_hours_max"] = self.node_hours()
        return data
