"""Contract tests over every registered scheduler and launcher, and the registries themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from xvhpc.backends.base import LAUNCHERS, SCHEDULERS, get_scheduler
from xvhpc.plan import build_plan
from xvhpc.plan.render import render_plan
from xvhpc.registry import Registry, UnknownName
from xvhpc.spec import SpecError, load_site, load_spec

from .conftest import ROOT

SCHEDULER_NAMES = SCHEDULERS.names()
LAUNCHER_NAMES = LAUNCHERS.names()


def _site(tmp_path: Path, scheduler: str, launcher: str = "local") -> Path:
    data = yaml.safe_load((ROOT / "site_configs" / "x86-v100.yaml").read_text())
    data.update(name=f"contract-{scheduler}", scheduler=scheduler, launcher=launcher)
    path = tmp_path / f"{scheduler}-{launcher}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_there_is_something_to_check() -> None:
    assert {"local", "slurm", "lsf", "lsf-classic"} <= set(SCHEDULER_NAMES)
    assert {"local", "srun", "jsrun", "mpirun", "torchrun"} <= set(LAUNCHER_NAMES)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_scheduler_contract(name: str, tmp_path: Path) -> None:
    """Sorted directives, a submit line per step, ids parsed from what submit prints, cancel."""
    site = load_site(str(_site(tmp_path, name)))
    plan = build_plan(load_spec(ROOT / "jobs" / "covid_xray.yaml"), site, "/scratch/runs/c")
    scheduler = get_scheduler(name)
    files = render_plan(plan, site)
    for step in plan.steps:
        directives = scheduler.directives(step, plan, site)
        assert directives == sorted(directives), f"{name}: directives must be sorted"
        assert f"scripts/{step.name}{scheduler.suffix}" in files
        argv, _ = scheduler.submit_argv("scripts/x", ["111"] if step.after else [])
        assert argv, name
        if step.after and not scheduler.runs_here:
            assert any("111" in a for a in argv), f"{name}: dependency lost"
    assert "scripts/submit.sh" in files
    if scheduler.runs_here:
        return
    assert scheduler.cancel_argv(["7", "8"])[-2:] == ["7", "8"]
    assert scheduler.requeue_command(), f"{name}: a requeue command is needed"
    with pytest.raises(ValueError):
        scheduler.parse_job_id("nonsense")


SUBMIT_OUTPUT = {
    "slurm": "4242\n",
    "lsf": "Job <4242> is submitted to queue <batch>.\n",
    "lsf-classic": "Job <4242> is submitted to default queue <normal>.\n",
}


@pytest.mark.parametrize("name", [n for n in SCHEDULER_NAMES if not SCHEDULERS.get(n).runs_here])
def test_job_ids_are_parsed_from_real_submit_output(name: str) -> None:
    assert name in SUBMIT_OUTPUT, f"add {name}'s submit output to this test"
    assert get_scheduler(name).parse_job_id(SUBMIT_OUTPUT[name]) == "4242"


@pytest.mark.parametrize("name", LAUNCHER_NAMES)
def test_launcher_contract(name: str, tmp_path: Path) -> None:
    """Every launch line ends with the per-rank command, unchanged."""
    site = load_site(str(_site(tmp_path, "slurm", name)))
    plan = build_plan(load_spec(ROOT / "jobs" / "covid_xray.yaml"), site, "/scratch/runs/c")
    launcher = LAUNCHERS.get(name)()
    argv = ["python3", "-m", "xvhpc", "train", "--run-dir", "/r"]
    for step in plan.steps:
        line = launcher.command(step, site, argv) if step.distributed else argv
        assert line[-3:] == argv[-3:], name
        assert launcher.single_command(step, site, argv)[-len(argv) :] == argv


def test_registry_refuses_a_duplicate_name() -> None:
    reg: Registry[object] = Registry("thing")

    @reg.register("a")
    class A:
        pass

    with pytest.raises(ValueError, match="registered twice"):

        @reg.register("a")
        class B:
            pass


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownName, match="did you mean slurm"):
        SCHEDULERS.get("slurn")


def test_site_scheduler_typo_says_did_you_mean(tmp_path: Path) -> None:
    """The names come from the registry (no Literal duplicating them)."""
    path = _site(tmp_path, "slurn")
    with pytest.raises(SpecError) as info:
        load_site(str(path))
    text = str(info.value)
    assert "scheduler" in text
    assert "did you mean slurm" in text
    assert "lsf-classic" in text  # every registered name is listed


class _Sacct:
    """A runner answering sacct with three of an array's four elements (the fourth was
    cancelled while pending: Slurm accounting never lists it)."""

    retries = 0

    def run(self, argv: list[str], **kwargs: object) -> str:
        return "JobID|State|ExitCode\n" + "".join(f"109_{i}|COMPLETED|0:0\n" for i in range(3))


def test_an_array_missing_elements_is_not_completed() -> None:
    from xvhpc.submit import query_states

    jobs = {"scheduler": "slurm", "steps": {"predict": {"job_id": "109", "array": 4}}}
    states = query_states(jobs, _Sacct())
    assert states["predict"][0] == "CANCELLED"
    jobs["steps"]["predict"]["array"] = 3
    assert query_states(jobs, _Sacct())["predict"][0] == "COMPLETED"
