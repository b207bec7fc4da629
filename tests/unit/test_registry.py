"""The registries themselves (duplicates, did-you-mean), old flat backend keys, array states; the
per-backend contracts are in tests/contract/test_backends.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, backend_site
from xvhpc.backends.base import SCHEDULERS
from xvhpc.plan import build_plan
from xvhpc.plan.render import render_plan
from xvhpc.registry import Registry, UnknownName
from xvhpc.spec import SpecError, load_site, load_spec


def _site_text(tmp_path: Path, base: str, old: str, new: str) -> Path:
    text = (ROOT / "site_configs" / f"{base}.yaml").read_text().replace(old, new)
    path = tmp_path / f"{base}.yaml"
    path.write_text(text)
    return path


def test_old_flat_backend_keys_still_work_with_a_warning(tmp_path: Path) -> None:
    """``alloc_flags``/``jsrun_mode``/``gpu_request``/``binding``/``srun_mpi``/``lsf.*`` moved
    under ``scheduler_options``/``launcher_options``: the old places are read as before, and
    loading warns with file:line, the old key and the new place."""
    path = _site_text(
        tmp_path,
        "summit",
        'scheduler_options: {alloc_flags: "smt4"}',
        'alloc_flags: "smt4"\nlsf: {warning_action: true}',
    )
    site = load_site(str(path))
    assert site.options("scheduler").alloc_flags == "smt4"
    assert site.options("scheduler").warning_action is True
    assert site.warnings == [
        f"{path}:6: alloc_flags has moved to scheduler_options.alloc_flags "
        "(the old key still works, for now)",
        f"{path}:7: lsf.warning_action has moved to scheduler_options.warning_action "
        "(the old key still works, for now)",
    ]
    spec = load_spec(ROOT / "jobs" / "covid_xray.yaml")
    old = render_plan(build_plan(spec, site, "/r"), site)
    new = render_plan(build_plan(spec, load_site("summit"), "/r"), load_site("summit"))
    assert old["scripts/train.lsf"] == new["scripts/train.lsf"]


def test_a_bad_backend_option_names_file_line_key_and_choices(tmp_path: Path) -> None:
    path = _site_text(tmp_path, "x86-v100", "gpu_request: gpus_per_node", "gpu_request: grse")
    with pytest.raises(SpecError) as info:
        load_site(str(path))
    text = str(info.value)
    assert f"{path}:6: scheduler_options.gpu_request: 'grse' is not a valid choice" in text
    assert "did you mean gres" in text and "(valid: gres, gpus_per_node)" in text
    path = _site_text(tmp_path, "summit", "{mode: all_gpus_per_rank}", "{mdoe: rank_per_gpu}")
    with pytest.raises(SpecError, match=r"launcher_options\.mdoe: unknown key — did you mean mode"):
        load_site(str(path))


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
    path = backend_site(tmp_path, "slurn")
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
