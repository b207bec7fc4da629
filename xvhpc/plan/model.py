"""Spec × site → Plan: a DAG of Steps, pure data (written as plan.json)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from ..backends.base import get_launcher
from ..spec import (
    ExperimentSpec,
    LoadedSpec,
    SiteConfig,
    SpecError,
    point_spec,
    spec_hash,
    sweep_points,
)
from ..spec.points import (
    fold_points,
)
from ..spec.site import Queue
from ..util import format_hms, parse_walltime, safe_label
from .step import Plan, Step


def pack_train(
    points: int, nodes: int, walltime: str, want: int, queue: Queue | None
) -> tuple[int, int]:
    """(points per wave, waves per job) so each packed job fits its queue's node and time limits.

    Summit caps eligible *jobs*, not jsrun steps inside one: a job runs ``per_wave`` points at a
    time, ``waves`` times; its walltime is waves × the point walltime, within the bin that its
    node count falls in."""
    per_wave = max(1, min(points, want))
    if queue is not None:
        per_wave = max(1, min(per_wave, queue.max_nodes // max(nodes, 1)))
    if queue is None:
        return per_wave, math.ceil(points / per_wave)
    limit = queue.walltime_limit(nodes * per_wave)
    waves = max(1, limit // max(parse_walltime(walltime), 1))
    return per_wave, min(waves, math.ceil(points / per_wave))


def build_plan(loaded: LoadedSpec, site: SiteConfig, run_dir: str) -> Plan:
    """ingest (array over shards, or MPI ranks) → merge → train (per point) → evaluate → report."""
    spec = loaded.spec
    res = spec.resources
    trials = spec.sweep.trials if spec.sweep is not None else None
    # an Optuna study: ``trials`` slots, each asks the study for its point at run time
    points = [{} for _ in range(trials)] if trials else sweep_points(loaded)
    points = fold_points(loaded, points)
    for point in points:  # every point must validate (sweep values were checked already)
        point_spec(loaded, point)
    queue_name = res.queue or site.default_queue
    queue = site.queues.get(queue_name) if queue_name else None
    plan = Plan(
        name=spec.name,
        job_label=safe_label(spec.name, 32),
        site=site.name,
        spec_file=loaded.file,
        spec_hash=spec_hash(spec),
        run_dir=run_dir,
        points=points,
        queue=queue_name,
        account=res.account or site.default_account,
        max_requeues=spec.train.max_requeues,
        data_source=str(Path(spec.data.source).expanduser().resolve()),
        notify=res.notify == "email",
        qos=res.qos or site.job.qos,
        reservation=res.reservation or site.job.reservation,
    )
    if spec.data.stage == "node_local" and site.node_local and not site.local:
        plan.stage_dir = f"{site.node_local.path.rstrip('/')}/{plan.token}"
    plan.steps += ingest_steps(spec, site)
    train = train_step(spec, site, len(points), queue, plan.steps[-1].name)
    plan.steps.append(replace(train, stage_data=plan.stage_dir is not None))
    plan.steps.append(
        Step(
            "evaluate",
            ("evaluate", "--all"),
            spec.resources.evaluate_walltime,
            after=("train",),
            after_ended=train.array > 1,
            gpus_per_node=min(train.gpus_per_node, 1),
            cpus_per_task=min(site.node.cores, 8),
        )
    )
    plan.steps.append(
        Step("report", ("report",), spec.resources.report_walltime, after=("evaluate",))
    )
    single = res.single_allocation
    if single is None:
        single = queue is not None and not queue.chaining
    if single and not site.local:
        plan.steps = [single_allocation(plan.steps)]
    if queue is not None:
        _check_fits(plan, loaded, queue, str(queue_name))
    _check_caps(plan, loaded, site, queue, str(queue_name))
    return plan


def ingest_steps(spec: ExperimentSpec, site: SiteConfig) -> list[Step]:
    """Locally one process pool; under an MPI launcher (jsrun) one job of ranks that share the
    shards, rank 0 merging; elsewhere an array over shards, then a merge job."""
    walltime, shards, cores = spec.resources.ingest_walltime, spec.data.shards, site.node.cores
    everything = ("ingest", "--shard", "all", "--merge")
    if site.local:
        return [Step("ingest", everything, walltime, cpus_per_task=cores)]
    launcher = get_launcher(site.launcher)
    if launcher.mpi_ingest:
        nodes = math.ceil(shards / launcher.ingest_ranks_per_node(site))
        per_node = math.ceil(shards / nodes)
        cpus = max(1, cores // per_node)
        return [
            Step("ingest", everything, walltime, nodes=nodes, tasks_per_node=per_node,
                 cpus_per_task=cpus, distributed=True)
        ]  # fmt: skip
    array = Step(
        "ingest",
        ("ingest", "--shard", "{index}"),
        walltime,
        array=shards if shards > 1 else 0,
        cpus_per_task=min(cores, 8),
    )
    return [array, Step("merge", ("ingest", "--merge"), "00:10:00", after=("ingest",))]


def train_step(
    spec: ExperimentSpec, site: SiteConfig, n: int, queue: Queue | None, after: str
) -> Step:
    """One point per array task, or packed in waves where the site caps eligible jobs."""
    res = spec.resources
    local = site.local
    gpus = min(res.gpus_per_node, site.node.gpus) if local else res.gpus_per_node
    tasks = gpus or res.processes_per_node or 1
    nodes = 1 if local else res.nodes
    asked = spec.sweep.max_concurrent if spec.sweep else n
    packed = site.sweep.mode == "packed" and n > 1
    if packed:
        per_wave, waves = pack_train(n, nodes, res.walltime, asked, queue)
    else:
        per_wave, waves = min(asked, site.sweep.max_eligible_jobs or n), 1
    return Step(
        "train",
        ("train", "--point", "{index}"),
        res.walltime,
        after=(after,),
        array=n if (n > 1 or local) else 0,
        max_concurrent=per_wave if n > 1 else None,
        packed=packed,
        waves=waves,
        nodes=nodes,
        tasks_per_node=tasks,
        gpus_per_node=gpus,
        cpus_per_task=res.cpus_per_task or max(1, site.node.cores // max(tasks, 1)),
        distributed=True,
        requeue=not local,
        mpi=spec.train.backend == "horovod",
    )


def _check_fits(plan: Plan, loaded: LoadedSpec, queue: Queue, name: str) -> None:
    """Every job's walltime within its queue's limit for its size (a packed or single-
    allocation job asks for more than one step's walltime)."""
    problems = [
        loaded.problem(
            "resources.walltime",
            f"job {s.name!r} needs {format_hms(s.job_seconds)} on {s.allocation_nodes} "
            f"node(s), but queue {name!r} allows {format_hms(limit)}: lower the "
            "walltimes, or use a queue that allows chaining",
        )
        for s, limit in plan.over_walltime(queue)
    ]
    if problems:
        raise SpecError(problems)


# the spec key that decides a step's array size, named in the error
ARRAY_KEYS = {"ingest": "data.shards", "train": "sweep"}


def _check_caps(
    plan: Plan, loaded: LoadedSpec, site: SiteConfig, queue: Queue | None, name: str
) -> None:
    """A job array within the site's array size (Slurm MaxArraySize, LSF MAX_JOB_ARRAY_SIZE)
    and the whole plan within the queue's per-user queued-job cap: the scheduler would reject
    them at submit time, after part of the chain was queued (issue 22 N5)."""
    if site.local:
        return
    problems = []
    cap = site.sweep.max_array_size
    for s in plan.steps:
        if s.scheduler_array > cap:
            problems.append(
                loaded.problem(
                    ARRAY_KEYS.get(s.name, "sweep"),
                    f"job {s.name!r} would be an array of {s.scheduler_array} elements, but "
                    f"{site.name} allows {cap} (site key sweep.max_array_size: Slurm "
                    "MaxArraySize, LSF MAX_JOB_ARRAY_SIZE): use fewer points or shards",
                )
            )
    jobs = plan.queued_jobs
    if queue is not None and queue.max_queued_jobs and jobs > queue.max_queued_jobs:
        problems.append(
            loaded.problem(
                "resources.queue",
                f"the plan queues {jobs} jobs (array elements counted), but queue {name!r} "
                f"takes at most {queue.max_queued_jobs} per user: use fewer points, "
                "sweep.max_concurrent, or another queue",
            )
        )
    if problems:
        raise SpecError(problems)


def single_allocation(steps: list[Step]) -> Step:
    """All steps as successive launcher steps of one job: one queue wait instead of several."""
    stages = []
    for s in steps:
        if s.name == "merge":
            continue  # the ingest stage merges
        if s.name == "ingest" and not s.distributed:
            s = replace(s, args=("ingest", "--shard", "all", "--merge"), array=0)
        if s.packed and s.array:  # one job runs every wave
            s = replace(s, waves=math.ceil(s.array / s.per_wave))
        stages.append(replace(s, after=()))
    train = next(s for s in stages if s.name == "train")
    # ingest's MPI ranks share the shards round robin: on the nodes training holds, never more
    # (64 shards must not make the whole job 11 nodes when training uses 2; issue 22 N9)
    stages = [
        replace(s, nodes=min(s.nodes, train.allocation_nodes))
        if s.name == "ingest" and s.distributed
        else s
        for s in stages
    ]
    return Step(
        "pipeline",
        ("pipeline",),
        format_hms(sum(s.job_seconds for s in stages)),
        nodes=train.allocation_nodes,
        tasks_per_node=train.tasks_per_node,
        gpus_per_node=train.gpus_per_node,
        cpus_per_task=train.cpus_per_task,
        distributed=True,
        stages=tuple(stages),
        requeue=any(s.requeue for s in stages),
        stage_data=any(s.stage_data for s in stages),
    )
