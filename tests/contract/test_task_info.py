"""The contract every registered task keeps on the login side (torch-free TaskInfo), run over the
registry: a new task folder is checked here without an edit to this file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xvhpc.registry import UnknownName, task_info, task_infos, task_of_arch
from xvhpc.spec import SpecError, load_spec

TASKS = sorted(task_infos())


def test_the_registry_finds_every_task_folder() -> None:
    folders = Path(__file__).parents[2] / "xvhpc" / "tasks"
    with_info = {p.parent.name for p in folders.glob("*/info.py")}
    assert with_info == set(TASKS) and {"classify", "detect"} <= with_info


def test_an_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(
        UnknownName, match=r"did you mean detect\?.*known: detect, action, classify"
    ):
        task_info("detekt")


@pytest.mark.parametrize("name", TASKS)
def test_info_is_consistent(name: str) -> None:
    info = task_info(name)
    assert info.name == name and info.archs and info.rank_by and info.outputs
    assert info.selection in info.val_metrics and info.objectives[0] == "val_loss"
    assert all(task_of_arch(a) is info for a in info.archs)  # no arch belongs to two tasks
    assert info.direction("val_loss") == "minimize"
    assert info.direction(info.selection) == ("maximize" if info.mode == "max" else "minimize")
    best = 1.0 if info.mode == "max" else 0.0
    assert info.better(best, 0.5) and not info.better(0.5, best) and info.better(0.5, None)
    for rank_by in info.rank_by:  # a study optimises what training measures, else the loss
        assert info.objective_for(rank_by) in info.objectives


@pytest.mark.parametrize("name", TASKS)
def test_a_spec_of_the_task_takes_its_default_metric_and_refuses_others(
    name: str, tmp_path: Path
) -> None:
    info = task_info(name)
    other = next(a for a in task_infos().values() if a is not info)
    data = tmp_path / "data.json"
    data.write_text("{}")
    pretrained = info.pretrained[-1]
    head = (
        f"name: t\ntask: {name}\ndata: {{source: {data}, format: coco}}\n"
        f"model: {{arch: {info.archs[-1]}, pretrained: {pretrained}}}\n"
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(head)
    assert load_spec(spec).spec.evaluate.rank_by == info.rank_by[0]
    spec.write_text(
        head
        + f"evaluate: {{rank_by: {other.rank_by[0]}}}\n"
        + f"train: {{early_stop: {{metric: {other.selection}}}}}\n"
        + f"sweep: {{parameters: {{train.learning_rate: [0.1, 0.2]}}, objective: {other.selection}}}\n"
    )
    with pytest.raises(SpecError) as raised:
        load_spec(spec)
    text = str(raised.value)
    assert (
        f"spec.yaml:5: evaluate.rank_by: '{other.rank_by[0]}' is not a metric of task: {name}"
        in text
    )
    assert f"(valid: {', '.join(info.rank_by)})" in text
    assert f"spec.yaml:6: train.early_stop.metric: '{other.selection}'" in text
    assert f"spec.yaml:7: sweep.objective: '{other.selection}'" in text
    assert f"(valid: {', '.join(info.objectives)})" in text


def test_validating_a_spec_imports_no_task_compute_code(tmp_path: Path) -> None:
    """The login side reads TaskInfo only: no torch, no tasks/<name>/task.py."""
    code = (
        "import sys; from xvhpc.spec import load_spec; from xvhpc.registry import task_infos;"
        "task_infos(); print(sorted(m for m in sys.modules if m == 'torch' or m.endswith('.task')"
        " and m.startswith('xvhpc.tasks')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
