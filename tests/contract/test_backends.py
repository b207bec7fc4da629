"""Contract tests over every registered scheduler, launcher and job environment: a new backend
folder is covered here with no edit (the registries list it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, backend_site
from xvhpc.backends.base import LAUNCHERS, SCHEDULERS, get_scheduler
from xvhpc.plan import build_plan
from xvhpc.plan.render import render_plan
from xvhpc.spec import load_site, load_spec

SCHEDULER_NAMES = SCHEDULERS.names()
LAUNCHER_NAMES = LAUNCHERS.names()


def test_there_is_something_to_check() -> None:
    assert {"local", "slurm", "lsf", "lsf-classic"} <= set(SCHEDULER_NAMES)
    assert {"local", "srun", "jsrun", "mpirun", "torchrun"} <= set(LAUNCHER_NAMES)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_scheduler_contract(name: str, tmp_path: Path) -> None:
    """Sorted directives, a submit line per step, ids parsed from what submit prints, cancel."""
    site = load_site(str(backend_site(tmp_path, name)))
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
    site = load_site(str(backend_site(tmp_path, "slurm", name)))
    plan = build_plan(load_spec(ROOT / "jobs" / "covid_xray.yaml"), site, "/scratch/runs/c")
    launcher = LAUNCHERS.get(name)()
    argv = ["python3", "-m", "xvhpc", "train", "--run-dir", "/r"]
    for step in plan.steps:
        line = launcher.command(step, site, argv) if step.distributed else argv
        assert line[-3:] == argv[-3:], name
        assert launcher.single_command(step, site, argv)[-len(argv) :] == argv


@pytest.mark.parametrize(
    "kind,name",
    [("scheduler", n) for n in SCHEDULER_NAMES] + [("launcher", n) for n in LAUNCHER_NAMES],
)
def test_backend_options_contract(kind: str, name: str) -> None:
    """A backend's site options (``backends/<name>/options.py``) are optional: every field has a
    default, and unknown keys are refused."""
    from xvhpc.backends.options import Options

    model = (SCHEDULERS if kind == "scheduler" else LAUNCHERS).get(name).options
    if model is None:
        return
    assert issubclass(model, Options), f"{kind} {name}: options must derive from Options"
    model.model_validate({})
    with pytest.raises(ValueError):
        model.model_validate({"no_such_option": 1})


def test_the_job_side_is_stdlib_only() -> None:
    """Every training rank imports the environments: no pydantic, no login-side backends."""
    import subprocess
    import sys

    code = (
        "import sys; from xvhpc.runtime import whoami; import xvhpc.lock; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'torch', 'yaml') "
        "or m.startswith(('xvhpc.spec', 'xvhpc.plan', 'xvhpc.backends.slurm.scheduler'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rank_variable_comes_from_the_environments() -> None:
    """One list: the lock, the predict chunks and the batch task read the environments'."""
    from xvhpc.lock import launch_rank
    from xvhpc.runtime.whoami import DETECTION_ORDER, launcher_rank

    for env_cls in DETECTION_ORDER:
        if env_cls.rank_variables:
            rank, local = env_cls.rank_variables
            env = {rank: "3", local: "1", "SLURM_STEP_ID": "0"}
            assert launcher_rank(env) == (3, 1), env_cls.name
            assert launch_rank(env) == 3, env_cls.name
    assert launch_rank({"PMIX_RANK": "2"}) == 2
    assert launch_rank({"SLURM_PROCID": "1"}) == 0  # the batch script itself, not an srun task
