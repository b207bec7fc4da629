"""Spec × site → Plan: a DAG of Steps, pure data (written as plan.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..spec import LoadedSpec, SiteConfig, point_spec, spec_hash, sweep_points
from ..util import parse_walltime, safe_label


@dataclass(frozen=True)
class Step:
    """One job (or job array) of the pipeline."""

    name: str
    args: tuple[str, ...]  # xvhpc sub-command and flags; "{index}" marks the array/point index
    walltime: str
    after: tuple[str, ...] = ()
    array: int = 0  # > 0: run once per index 0..array-1
    max_concurrent: int | None = None
    packed: bool = False  # the array runs as concurrent launcher steps in one allocation
    nodes: int = 1  # per index
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    distributed: bool = False  # launched through the site's launcher
    requeue: bool = False

    @property
    def allocation_nodes(self) -> int:
        """Nodes the scheduler is asked for (packed arrays share one allocation)."""
        if self.packed and self.array:
            return self.nodes * min(self.array, self.max_concurrent or self.array)
        return self.nodes


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
    steps: list[Step] = field(default_factory=list)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def node_hours(self) -> float:
        """Upper bound on node-hours if every job ran to its walltime."""
        total = 0.0
        for s in self.steps:
            copies = 1 if (s.packed or not s.array) else s.array
            total += copies * s.allocation_nodes * parse_walltime(s.walltime) / 3600
        return round(total, 2)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["node_hours_max"] = self.node_hours()
        return data


def build_plan(loaded: LoadedSpec, site: SiteConfig, run_dir: str) -> Plan:
    """ingest (array over shards) → merge → train (per point) → evaluate → report."""
    spec = loaded.spec
    res = spec.resources
    points = sweep_points(loaded)
    for point in points:  # every point must validate (sweep values were checked already)
        point_spec(loaded, point)
    local = site.scheduler == "local"
    nodes = 1 if local else res.nodes
    gpus = min(res.gpus_per_node, site.node.gpus) if local else res.gpus_per_node
    tasks = gpus or res.processes_per_node or 1
    cores = site.node.cores
    cpus = res.cpus_per_task or max(1, cores // max(tasks, 1))
    packed = site.sweep.mode == "packed" and len(points) > 1
    plan = Plan(
        name=spec.name,
        job_label=safe_label(spec.name, 32),
        site=site.name,
        spec_file=loaded.file,
        spec_hash=spec_hash(spec),
        run_dir=run_dir,
        points=points,
        queue=res.queue or site.default_queue,
        account=res.account or site.default_account,
        max_requeues=spec.train.max_requeues,
        data_source=str(Path(spec.data.source).expanduser().resolve()),
    )
    shards = spec.data.shards
    if local:
        plan.steps.append(
            Step(
                "ingest",
                ("ingest", "--shard", "all", "--merge"),
                res.ingest_walltime,
                cpus_per_task=cores,
            )
        )
    else:
        plan.steps.append(
            Step(
                "ingest",
                ("ingest", "--shard", "{index}"),
                res.ingest_walltime,
                array=shards if shards > 1 else 0,
                max_concurrent=None,
                cpus_per_task=min(cores, 8),
            )
        )
        plan.steps.append(Step("merge", ("ingest", "--merge"), "00:10:00", after=("ingest",)))
    n = len(points)
    plan.steps.append(
        Step(
            "train",
            ("train", "--point", "{index}"),
            res.walltime,
            after=("ingest",) if local else ("merge",),
            array=n if (n > 1 or local) else 0,
            max_concurrent=min(
                spec.sweep.max_concurrent if spec.sweep else n, site.sweep.max_eligible_jobs or n
            )
            if n > 1
            else None,
            packed=packed,
            nodes=nodes,
            tasks_per_node=tasks,
            gpus_per_node=gpus,
            cpus_per_task=cpus,
            distributed=True,
            requeue=not local,
        )
    )
    plan.steps.append(
        Step(
            "evaluate",
            ("evaluate", "--all"),
            "00:30:00",
            after=("train",),
            gpus_per_node=min(gpus, 1),
            cpus_per_task=min(cores, 8),
        )
    )
    plan.steps.append(Step("report", ("report",), "00:15:00", after=("evaluate",)))
    return plan
