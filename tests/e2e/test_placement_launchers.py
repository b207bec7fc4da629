"""Which GPU a rank uses, under the real launchers: every Slurm layout through real srun on the local
Slurm (GPU GRES backed by device files), real mpirun and real torchrun (the rule itself is unit-tested
in tests/unit/runtime/test_placement.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require
from xvhpc.backends.base import LAUNCHERS, render_tokens
from xvhpc.plan.model import Step
from xvhpc.runtime.placement import duplicate_gpus
from xvhpc.spec import load_site

pytestmark = pytest.mark.e2e


PROBE = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from xvhpc.runtime.placement import place
node_gpus = int(sys.argv[2])
cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
count = len([v for v in cvd.split(",") if v]) if cvd is not None else node_gpus
rank = next(int(os.environ[k]) for k in ("RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID") if k in os.environ)
local = next(int(os.environ[k]) for k in ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID") if k in os.environ)
p = place(local, count)
host = os.environ.get("SLURMD_NODENAME") or os.uname().nodename
view = {"rank": rank, "host": host, "local": local, "visible": list(p.visible),
        "index": p.index, "gpu": p.gpu}
with open(os.path.join(sys.argv[3], f"rank-{rank}.json"), "w") as fh:  # launchers mix stdout
    json.dump(view, fh)
"""


def probe_argv(node_gpus: int, out: Path) -> list[str]:
    """Each rank writes its view to OUT/rank-<r>.json (a launcher may interleave stdout)."""
    out.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-c", PROBE, str(ROOT), str(node_gpus), str(out)]


def ranks_of(out: Path) -> list[dict]:
    return sorted(
        (json.loads(f.read_text()) for f in out.glob("rank-*.json")), key=lambda r: r["rank"]
    )


def assert_one_gpu_each(ranks: list[dict], expected: int) -> None:
    """Every rank is on a GPU it can see, and no two ranks of a node share one."""
    assert len(ranks) == expected, ranks
    for r in ranks:
        assert r["index"] is not None and 0 <= r["index"] < len(r["visible"]), r
    assert duplicate_gpus((r["rank"], r["host"], r["gpu"]) for r in ranks) == [], ranks


def in_allocation(job: list[str], srun_line: list[str], out: Path) -> list[dict]:
    """Run ``srun_line`` (its probe writing to ``out``) in a real 2-node x 2-task allocation
    that asks ``job``; each rank's view, checked: every rank on a GPU it sees, no two of a node
    on one."""
    cmd = ["salloc", "--nodes=2", "--ntasks-per-node=2", "--cpus-per-task=1", *job, *srun_line]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ranks = ranks_of(out)
    assert_one_gpu_each(ranks, 4)
    return ranks


SLURM_LAYOUTS = {
    # what the job asks for            what srun adds
    "gpus-per-node (xvhpc)": (["--gpus-per-node=2"], []),
    "gres (xvhpc)": (["--gres=gpu:2"], []),
    "gpus-per-task": (["--gpus-per-task=1"], []),
    "gpus-per-node, gpu-bind=closest": (["--gpus-per-node=2"], ["--gpu-bind=closest"]),
    "gpus-per-node, gpu-bind=per_task:1": (["--gpus-per-node=2"], ["--gpu-bind=per_task:1"]),
    "gpus-per-node, gpu-bind=single:1": (["--gpus-per-node=2"], ["--gpu-bind=single:1"]),
    "srun --gpus-per-task (the old line)": (["--gpus-per-node=2"], ["--gpus-per-task=1"]),
}


@pytest.mark.slurm
@pytest.mark.parametrize("layout", list(SLURM_LAYOUTS))
def test_every_slurm_layout_gives_each_rank_its_own_visible_gpu(
    slurm_up, layout: str, tmp_path: Path
) -> None:
    """Two nodes x two ranks under a real srun: each rank uses a GPU it sees, none shared."""
    job, extra = SLURM_LAYOUTS[layout]
    srun = ["srun", "--nodes=2", "--ntasks-per-node=2", "--cpus-per-task=1", *extra]
    ranks = in_allocation(job, [*srun, *probe_argv(4, tmp_path)], tmp_path)
    if "(xvhpc)" in layout:  # the layouts xvhpc asks for: every rank sees the node's GPUs (IPC)
        assert all(r["visible"] == ["0", "1"] for r in ranks), ranks


@pytest.mark.slurm
def test_the_rendered_srun_line_keeps_the_nodes_gpus_together(slurm_up, tmp_path: Path) -> None:
    """x86-v100's own launch line (no --gpus-per-task) inside a --gpus-per-node job."""
    step = Step(
        "train",
        ("train",),
        "00:10:00",
        nodes=2,
        tasks_per_node=2,
        gpus_per_node=2,
        cpus_per_task=1,
        distributed=True,
    )
    site = load_site(str(ROOT / "site_configs" / "x86-v100.yaml"))
    line = LAUNCHERS.get("srun")().command(step, site, probe_argv(4, tmp_path))
    assert not any(t.startswith("--gpus-per-task") for t in line), render_tokens(line)
    line = [t if not t.startswith("--cpus-per-task") else "--cpus-per-task=1" for t in line]
    ranks = in_allocation(["--gpus-per-node=2"], line, tmp_path)
    assert [(r["host"], r["gpu"]) for r in ranks] == [
        ("n1", "0"),
        ("n1", "1"),
        ("n2", "0"),
        ("n2", "1"),
    ]


def test_mpirun_ranks_take_their_local_rank(tmp_path: Path) -> None:
    require("mpirun", "placement under a real Open MPI")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "4", *probe_argv(4, tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    ranks = ranks_of(tmp_path)
    assert_one_gpu_each(ranks, 4)
    assert [r["gpu"] for r in ranks] == ["4", "5", "6", "7"]


def test_torchrun_ranks_take_their_local_rank(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(script),
        str(ROOT),
        "2",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    ranks = ranks_of(tmp_path)
    assert_one_gpu_each(ranks, 2)
    assert [r["gpu"] for r in ranks] == ["0", "1"]
