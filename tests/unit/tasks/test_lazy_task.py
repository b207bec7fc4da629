"""``LazyTask`` (tasks/base.py): a task's hooks as a table of names, imported at a hook's first
call. What it must keep: importing a task loads no torch and none of its hooks' modules; every
row names something that exists and takes the arguments the row passes; a wrong table is a
``TypeError`` at class definition that names the class, the row and the valid choices."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys
from types import SimpleNamespace

import pytest

from xvhpc.registry import load_task, task_infos
from xvhpc.tasks.base import ATTRIBUTE_HOOKS, DERIVED, LazyTask, ReviewingTask

TASKS = sorted(task_infos())
ROWS = {  # a complete table for the classify package: every row a stdlib function
    "catalog": "builtins:divmod(data, source)",
    "process_sample": "builtins:repr",
    "shard_writer": "builtins:dict",
    "dataset_class": "builtins:list",
    "build_model": "builtins:max",
    "weights": "builtins:__name__",
    "loss": "builtins:max",
    "validate": "builtins:max",
    "evaluate_point": "builtins:max",
    "report_point": "builtins:str(eval_dir)",
    "predict_chunk": "builtins:list(chunk)",
    "chunk_rows": "builtins:max",
    "merge": "builtins:max",
    "serve_response": "builtins:max",
    "export": "builtins:max",
    "synth": "builtins:repr",
}


def _task_class(rows: dict[str, str], base: type[LazyTask] = LazyTask, **methods) -> type:
    """A LazyTask subclass defined as if in ``xvhpc/tasks/classify/task.py``."""
    body = {"hooks": rows, "__module__": "xvhpc.tasks.classify.task", **methods}
    return type("Probe", (base,), body)


def test_importing_every_task_loads_no_torch_and_none_of_its_hooks_modules() -> None:
    """A fresh interpreter: TASK of every task, yet no torch and no module a hook names (the
    login side resolves tasks; ingest must not load the training code)."""
    code = (
        "import sys; from xvhpc.registry import load_task, task_infos\n"
        "tasks = [load_task(n) for n in task_infos()]\n"
        "rows = {t.module for task in tasks for t in task.targets.values()}\n"
        "print(len(tasks), len(rows), sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'torchvision', 'h5py') or m in rows))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, rows, loaded = out.stdout.split(" ", 2)
    assert int(count) == len(TASKS) and int(rows) > len(TASKS), out.stdout
    assert loaded.strip() == "[]", out.stdout


@pytest.mark.parametrize("name", TASKS)
def test_every_row_names_what_takes_its_arguments(name: str) -> None:
    """Each row's module and attribute exist; a called one accepts the arguments it is passed
    (``inspect.signature(...).bind``: a missing or surplus argument is a TypeError here)."""
    task = load_task(name)
    hooks = {n: fn for base in (ReviewingTask, LazyTask) for n, fn in vars(base).items()}
    assert task.targets, name
    for hook, target in task.targets.items():
        found = target.resolve()
        if hook in ATTRIBUTE_HOOKS:
            assert not callable(found) or isinstance(found, type), (name, hook)
            continue
        count = len(inspect.signature(hooks[hook]).parameters) - 1
        passed = target.picks if target.picks is not None else range(count)
        inspect.signature(found).bind(*passed)


def test_a_row_passes_the_arguments_it_names_in_its_order() -> None:
    task = _task_class(ROWS)()
    assert task.catalog(7, 30) == (4, 2)  # divmod(data, source)
    assert task.synth("x") == "'x'" and task.shard_writer() is dict
    assert task.build_model(3, 9, 4) == 9  # every argument: max(spec, num_classes, image_size)
    run = SimpleNamespace(layout=SimpleNamespace(eval_dir=lambda point: f"eval/{point}"))
    assert task.report_point(run, 2, {}) == "eval/2"  # DERIVED: run.layout.eval_dir(point)
    job = SimpleNamespace(chunk=lambda index: [index, index + 1])
    assert task.predict_chunk(None, job, 5, None) == [5, 6]  # DERIVED: job.chunk(index)
    assert set(DERIVED) == {"report_point", "predict_chunk"}


def test_hooks_without_a_row_keep_their_defaults_and_reviews_stays_absent() -> None:
    """No pool, cross-validation section or extras row: the folds pass through, no HTML; a
    LazyTask has no ``reviews`` at all (predict refuses review formats by ``hasattr``)."""
    task = _task_class(ROWS)()
    results = {0: {"accuracy": 1.0}}
    assert task.pool(None, results, {}, logging.getLogger("t")) is results
    assert task.crossval_section(None, {}) == "" and task.report_extras(None, 0) == ""
    assert not hasattr(task, "reviews")
    assert hasattr(_task_class({**ROWS, "reviews": "builtins:max"}, ReviewingTask)(), "reviews")
    assert {hasattr(load_task(n), "reviews") for n in TASKS} == {True, False}


@pytest.mark.parametrize(
    ("rows", "methods", "message"),
    [
        ({**ROWS, "catalgo": "builtins:max"}, {},
         "Probe.hooks: 'catalgo' is not a hook — did you mean catalog? (valid: catalog, "),
        ({**ROWS, "reviews": "builtins:max"}, {}, "'reviews' is not a hook"),
        ({**ROWS, "merge": "builtins:max(out, flies)"}, {},
         "Probe.hooks['merge']: 'flies' is not an argument of merge — did you mean files? "
         "(valid: out, files, job, meta, log)"),
        ({**ROWS, "weights": "builtins:max(spec)"}, {}, "weights is the object itself, not a call"),
        ({**ROWS, "export": "builtins.max"}, {}, "is not 'module:function' or"),
        ({k: v for k, v in ROWS.items() if k not in ("loss", "synth")}, {},
         "Probe.hooks: no row (nor a method) for loss, synth"),
        (ROWS, {"synth": lambda self, args: 0}, "'synth' has a row and a method: keep one"),
    ],
)  # fmt: skip
def test_a_wrong_table_fails_at_class_definition(rows, methods, message) -> None:
    with pytest.raises(TypeError) as raised:
        _task_class(rows, **methods)
    assert message in str(raised.value)
    assert "xvhpc.tasks.classify.task.Probe.hooks" in str(raised.value)


def test_a_method_serves_a_hook_without_a_row() -> None:
    rows = {k: v for k, v in ROWS.items() if k != "synth"}
    assert _task_class(rows, synth=lambda self, args: 7)().synth(None) == 7
