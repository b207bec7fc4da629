"""Slurm's site options: how sbatch asks for GPUs (``scheduler_options``), and how srun binds and
wires its ranks (``launcher_options``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...spec.site import Binding, Name
from ..options import Options


class SlurmOptions(Options):
    # --gpus-per-node, or --gres=gpu:N on clusters whose Slurm predates it
    gpu_request: Literal["gpus_per_node", "gres"] = "gpus_per_node"


class SrunOptions(Options):
    mpi: Name | None = None  # srun --mpi (e.g. pmix); Horovod steps get pmix without it
    binding: Binding = Field(default_factory=Binding)
