"""Hostile manifests, second pass (issue 23, finding 11): deeply nested JSON and CSV fields
over the csv module's 128 KiB limit are one clear error naming the file, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from xvhpc.data.catalog import CatalogError, build_catalog
from xvhpc.spec.schema import DataSpec
from xvhpc.tasks.detect.catalog import build_detection_catalog


@pytest.mark.timeout(60)
def test_deeply_nested_coco_json_is_a_clear_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"images": ' + "[" * 200_000 + "]" * 200_000 + "}")
    for build in (build_catalog, build_detection_catalog):
        with pytest.raises(CatalogError, match=r"deep\.json: JSON nested too deeply"):
            build(deep, DataSpec(source=str(deep)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("detect", [False, True])
def test_csv_field_over_128_kib_is_a_clear_error(tmp_path: Path, detect: bool) -> None:
    big = tmp_path / "big.csv"
    head = "path,label,x0,y0,x1,y1" if detect else "path,label"
    big.write_text(f'{head}\n"{"x" * 200_000}.png",a{",1,1,5,5" if detect else ""}\n')
    build = build_detection_catalog if detect else build_catalog
    with pytest.raises(CatalogError, match=r"big\.csv: not a usable CSV.*field larger"):
        build(big, DataSpec(source=str(big)))


def test_damaged_heartbeats_are_no_traceback(tmp_path: Path) -> None:
    """Finding 11: a heartbeat file that is [], null, text, or has a bad or missing pid, on a
    RUNNING trial: `status` treats it as no heartbeat (orphaned after the grace), no traceback."""
    import json
    import socket

    import optuna

    from xvhpc.sweeps.heartbeat import heartbeat_path, orphaned

    study = optuna.create_study()
    study.ask()
    trial = study.trials[0]
    path = heartbeat_path(tmp_path, trial.number)
    path.parent.mkdir(parents=True)
    host = socket.gethostname()
    for text in ("[]", "null", "not json", json.dumps({"host": host, "pid": "abc"}),
                 json.dumps({"host": host})):  # fmt: skip
        path.write_text(text)
        assert orphaned(tmp_path, trial) == ""  # started just now: within the grace
        late = trial.datetime_start.timestamp() + 10_000
        assert "no heartbeat" in orphaned(tmp_path, trial, now=late)


def test_a_damaged_or_emptied_study_journal_is_one_clear_error(tmp_path: Path) -> None:
    """Finding 11: a garbage line or random bytes in study.journal, or an emptied journal while
    slots have run trials, is a StudyError naming the journal (status shows it as a warning)."""
    import os

    import optuna

    from xvhpc.rundir import Layout
    from xvhpc.sweeps.study import STUDY_NAME, StudyError, existing_study, storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage(tmp_path))
    study.tell(study.ask(), 0.5)
    journal = Layout(tmp_path).study_journal
    good = journal.read_bytes()
    assert existing_study(tmp_path) is not None
    lines = good.splitlines(keepends=True)
    journal.write_bytes(lines[0] + b"{garbage\n" + b"".join(lines[1:]))
    with pytest.raises(StudyError, match=r"study.journal: the study journal is damaged"):
        existing_study(tmp_path)
    journal.write_bytes(os.urandom(2048))
    with pytest.raises(StudyError, match="damaged"):
        existing_study(tmp_path)
    journal.write_bytes(b"")
    (tmp_path / "train" / "0").mkdir(parents=True)
    (tmp_path / "train" / "0" / "trial.json").write_text('{"trial": 0}')
    with pytest.raises(StudyError, match="the study journal is empty"):
        existing_study(tmp_path)


def test_triton_export_of_a_detector_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    import json

    from xvhpc.serve.triton import export_triton
    from xvhpc.util import UserError

    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "meta.json").write_text(json.dumps({"spec": {"name": "boxes", "task": "detect"}}))
    with pytest.raises(UserError, match="Triton export is for classifiers.*--format onnx"):
        export_triton(tmp_path / "run", tmp_path / "TR")
    assert not (tmp_path / "TR").exists()


def test_disk_full_during_a_checkpoint_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """Finding 11: a checkpoint written to a full filesystem (a real 8 MB tmpfs) is an
    OSError(ENOSPC) naming the file, which the CLI prints as one line; no temp file is left."""
    import errno
    import subprocess

    import torch

    from tests.conftest import IN_CI
    from xvhpc.runtime.checkpoint import save_checkpoint

    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        message = f"cannot mount a small tmpfs here ({mounted.stderr.strip()})"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    try:
        with pytest.raises(OSError) as info:
            save_checkpoint(small / "checkpoint.pt", {"model": {"w": torch.zeros(4_000_000)}})
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(
            small / "checkpoint.pt"
        )
        assert list(small.iterdir()) == []
    finally:
        import gc

        info = None  # the failed writer's file handle lives in the traceback: let it go
        gc.collect()
        done = subprocess.run(["umount", "-l", str(small)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_logs_xvhpc_appends_to_are_never_written_through_a_link(tmp_path: Path) -> None:
    """Finding 3, the appended files: a link planted at a point's metrics log (or at a local
    step's log) is refused with one line; the file it points at is not touched."""
    import os

    from xvhpc.pipeline.train import append_metrics
    from xvhpc.util import UserError, open_append

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    planted = tmp_path / "metrics.jsonl"
    os.symlink(victim, planted)
    with pytest.raises(UserError, match="is a symbolic link; a log xvhpc appends to must be"):
        append_metrics(planted, {"iteration": 1})
    fifo = tmp_path / "train-local.out"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        open_append(fifo, binary=True)
    assert victim.read_text() == "keep me\n"
    fine = tmp_path / "ok.jsonl"
    append_metrics(fine, {"iteration": 1})
    append_metrics(fine, {"iteration": 2})
    assert fine.read_text().count("\n") == 2


def test_validate_says_what_compile_refuses_and_a_thin_select_warns(tmp_path: Path) -> None:
    """Minor findings: a study with folds fails `validate` (not only `compile`), naming
    data.split.folds at its line; select: 0.999 warns with the counts each fold trains on."""
    from xvhpc.data.catalog import build_catalog
    from xvhpc.data.synth import make_dataset
    from xvhpc.spec import SpecError, load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: t\ndata: {source: /nowhere, split: {folds: 3}}\nmodel: {arch: resnet18}\n"
        "sweep: {method: tpe, trials: 4, parameters: "
        "{train.learning_rate: {low: 0.001, high: 0.1, log: true}}}\n"
    )
    with pytest.raises(SpecError, match=r"s.yaml:2: data.split.folds: cross-validation needs"):
        load_spec(spec)
    source = make_dataset(tmp_path / "data", per_class=6, size=32, seed=1)
    thin = DataSpec(source=str(source), split={"folds": 3, "select": 0.9, "seed": 1})
    notes = build_catalog(source, thin).notes
    assert any(n.startswith("warning: data.split.select 0.9 leaves fold") for n in notes), notes
    fine = DataSpec(source=str(source), split={"folds": 3, "seed": 1})
    assert not [n for n in build_catalog(source, fine).notes if n.startswith("warning:")]
