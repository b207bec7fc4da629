"""Which GPU a rank uses, chosen from what the rank can see. Torch-free: the job side, the tests
and the device checks share it, and a real ``srun``/``mpirun``/``torchrun`` can run it cheaply.

A launcher gives a rank one of two views of a node's GPUs (README, "GPU layouts"):
  - every GPU the job holds on the node: srun under ``--gpus-per-node``/``--gres`` without a
    per-task binding, jsrun ``all_gpus_per_rank``, mpirun, torchrun. The rank takes the GPU at
    its local rank, and CUDA IPC/NVLink work between the node's ranks (one cgroup);
  - only its own GPU(s): srun ``--gpus-per-task`` (which implies ``--gpu-bind=per_task``),
    ``--gpu-bind=per_task:N|single:N``, jsrun ``rank_per_gpu``. The rank takes the first one it
    sees (with several of its own, the one at ``local_rank % count``, still its own).
Picking ``cuda:<local_rank>`` in the second view is the classic crash (``invalid device ordinal``
on rank 1 of a node). Two ranks that land on one GPU anyway (a node oversubscribed by hand) are
found after the rendezvous by comparing every rank's (host, GPU) — see ``duplicate_gpus``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# what launchers say of the ranks on this node, most specific first: torchrun, Open MPI /
# Spectrum MPI (jsrun and mpirun), srun
LOCAL_SIZE_VARIABLES = ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")


@dataclass(frozen=True)
class Placement:
    """Where one rank runs: its GPU among the visible ones (``None``: CPU) and its CPUs."""

    local_rank: int
    local_size: int
    visible: tuple[str, ...]  # the CUDA_VISIBLE_DEVICES entries this rank sees (or indices)
    index: int | None  # the CUDA device index used (an index into ``visible``)
    cpus: tuple[int, ...] = ()

    @property
    def gpu(self) -> str | None:
        """The GPU as the node names it (CUDA_VISIBLE_DEVICES entry), e.g. ``"3"`` or a UUID."""
        return None if self.index is None else self.visible[self.index]

    def describe(self) -> str:
        """The placement line each rank logs: what it sees, what it uses, where its CPUs are."""
        seen = ",".join(self.visible) or "none"
        use = "cpu" if self.index is None else f"cuda:{self.index} (node GPU {self.gpu})"
        return (
            f"local rank {self.local_rank}/{self.local_size}, visible GPUs [{seen}], using {use}, "
            f"CPUs {cpu_ranges(self.cpus) or 'unknown'}"
        )


def local_size(env: Mapping[str, str], local_rank: int) -> int:
    """Ranks on this node as the launcher says; at least ``local_rank + 1`` when it says nothing."""
    for name in LOCAL_SIZE_VARIABLES:
        value = env.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return local_rank + 1


def visible_gpus(env: Mapping[str, str], count: int) -> tuple[str, ...]:
    """The names of the ``count`` GPUs CUDA shows, as CUDA_VISIBLE_DEVICES lists them (indices
    when it is unset: every GPU of the node is visible)."""
    listed = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if "CUDA_VISIBLE_DEVICES" in env and listed:
        return tuple(listed[:count])
    return tuple(str(i) for i in range(count))


def choose_gpu(local_rank: int, ranks_on_node: int, count: int) -> int | None:
    """The CUDA device index for a rank that sees ``count`` GPUs (``None``: none, run on CPU).

    One visible GPU is the rank's own (per-task binding); as many as the node's ranks or more
    means the whole node is visible, so the local rank picks; fewer (several GPUs per task, each
    task its own set) stays inside the rank's own set."""
    if count <= 0:
        return None
    if count == 1:
        return 0
    if ranks_on_node <= count and local_rank < count:
        return local_rank
    return local_rank % count


def place(local_rank: int, count: int, env: Mapping[str, str] | None = None) -> Placement:
    """This rank's placement from its launcher's variables and the CUDA device count."""
    env = os.environ if env is None else env
    size = local_size(env, local_rank)
    visible = visible_gpus(env, count)
    return Placement(local_rank, size, visible, choose_gpu(local_rank, size, len(visible)), cpus())


def cpus() -> tuple[int, ...]:
    """The CPUs this process may run on (the launcher's binding), where the OS tells."""
    affinity = getattr(os, "sched_getaffinity", None)
    return tuple(sorted(affinity(0))) if affinity else ()


def cpu_ranges(cpus: Iterable[int]) -> str:
    """``0-9,20-29`` for a CPU set, as numactl and Slurm write it."""
    groups: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if groups and cpu == groups[-1][-1] + 1:
            groups[-1].append(cpu)
        else:
            groups.append([cpu])
    return ",".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups)


def gpu_identity(uuid: str | None, placement: Placement) -> str | None:
    """What names a rank's GPU across the node's ranks: its UUID where torch gives one (2.4+);
    else its CUDA_VISIBLE_DEVICES entry when the rank sees several (node-wide numbering); else
    nothing to compare (jsrun numbers each resource set's one GPU 0: every rank would seem to
    share GPU 0 on torch 2.0), and that rank is left out of the duplicate check."""
    if placement.index is None:
        return None
    if uuid:
        return uuid
    return placement.gpu if len(placement.visible) > 1 else None


def duplicate_gpus(ranks: Iterable[tuple[int, str, str | None]]) -> list[str]:
    """Ranks that share one GPU, from every rank's ``(rank, host, gpu id)``: one line per shared
    GPU (NCCL would stop later with "Duplicate GPU detected", or two ranks would share memory)."""
    owners: dict[tuple[str, str], list[int]] = {}
    for rank, host, gpu in ranks:
        if gpu is not None:
            owners.setdefault((host, gpu), []).append(rank)
    return [
        f"ranks {', '.join(map(str, sorted(r)))} all use GPU {gpu} on {host}"
        for (host, gpu), r in sorted(owners.items())
        if len(r) > 1
    ]
