"""Steps in a container image (env.container), rendered for every launcher and runtime: Apptainer
around each rank, torchrun inside one container, Pyxis flags on srun, a bad image reference (the
real Charliecloud run is tests/e2e/test_containers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from xvhpc.plan import build_plan
from xvhpc.plan.render import render_plan
from xvhpc.spec import SpecError, load_site, load_spec
from xvhpc.spec.site import Container

JOB = ROOT / "jobs" / "covid_xray.yaml"  # 2 nodes x 4 GPUs


def site_with(tmp_path: Path, base: str, container: dict, **changes) -> Path:
    data = yaml.safe_load((ROOT / "site_configs" / f"{base}.yaml").read_text())
    data["env"] = {**data.get("env", {}), "container": container, "python": "python3"}
    data.update(changes)
    path = tmp_path / f"{base}-{container['runtime']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def scripts(site_file: Path) -> dict[str, str]:
    site = load_site(str(site_file))
    plan = build_plan(load_spec(JOB), site, "/scratch/runs/x")
    plan.data_source = "/scratch/data"
    return {k.split("/")[-1]: v for k, v in render_plan(plan, site).items()}


def test_apptainer_wraps_each_rank_of_srun_mpirun_and_jsrun(tmp_path: Path) -> None:
    box = {"runtime": "apptainer", "image": "/images/pytorch.sif", "binds": ["/scratch"]}
    wrap = (
        'apptainer exec --nv --bind "$RUN_DIR",/scratch/data,/scratch /images/pytorch.sif '
        '"$XVHPC_PY" -m xvhpc train'
    )
    srun = scripts(site_with(tmp_path, "x86-v100", box))
    assert f"--kill-on-bad-exit=1 {wrap}" in srun["train.sbatch"]
    # a step without GPUs gets no --nv; it still runs in the image
    assert (
        'apptainer exec --bind "$RUN_DIR",/scratch/data,/scratch /images/pytorch.sif'
        in (srun["report.sbatch"])
    )
    mpirun = scripts(site_with(tmp_path, "x86-v100", box, launcher="mpirun"))["train.sbatch"]
    assert f'--hostfile "$LSB_DJOB_HOSTFILE"}} {wrap}' in mpirun
    jsrun = scripts(site_with(tmp_path, "summit", {**box, "runtime": "singularity"}))
    assert "--smpiargs=-disable_gpu_hooks singularity exec --nv" in jsrun["train.lsf"]


def test_torchrun_runs_inside_one_container() -> None:
    """torchrun's agent spawns the ranks itself: the container wraps the whole launch line."""
    site = load_site("local").model_copy(deep=True)
    site.env.container = Container(runtime="charliecloud", image="/images/xvhpc")
    spec = load_spec(JOB)
    plan = build_plan(spec, site, "/scratch/runs/x")
    train = render_plan(plan, site)["scripts/train.sh"]
    assert 'ch-run -b "$RUN_DIR" -b ' in train
    assert '--cd "$RUN_DIR" /images/xvhpc -- "$XVHPC_PY" -m torch.distributed.run' in train


def test_pyxis_adds_srun_flags_and_runs_single_steps_through_srun(tmp_path: Path) -> None:
    box = {"runtime": "pyxis", "image": "nvcr.io#nvidia/pytorch:24.05-py3"}
    out = scripts(site_with(tmp_path, "x86-v100", box))
    flags = (
        "'--container-image=nvcr.io#nvidia/pytorch:24.05-py3' "
        '--container-mounts="$RUN_DIR":"$RUN_DIR",/scratch/data:/scratch/data '
        '--container-workdir="$RUN_DIR"'
    )
    assert f"srun {flags} --nodes=2 --ntasks-per-node=4" in out["train.sbatch"]
    assert f'srun --nodes=1 --ntasks=1 {flags} "$XVHPC_PY" -m xvhpc report' in out["report.sbatch"]
    with pytest.raises(SpecError, match="pyxis is an srun plugin"):
        load_site(str(site_with(tmp_path, "summit", box)))


def test_a_bad_image_reference_is_refused_with_the_valid_form(tmp_path: Path) -> None:
    box = {"runtime": "apptainer", "image": "x.sif; rm -rf ~"}
    with pytest.raises(SpecError, match=r"env\.container\.image.*must be an image path"):
        load_site(str(site_with(tmp_path, "x86-v100", box)))
