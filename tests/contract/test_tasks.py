"""The task contract: every registered task (``xvhpc.registry.task_infos()``) goes through the
whole life of a model from its own synthetic data: ingest → train → resume → evaluate → report →
predict → serve → export, checked against the names its ``TaskInfo`` declares.

A new task folder is covered here with no edit: the parameters come from the registry, the data
from the task's ``synth`` hook, and the spec from ``tiny_spec`` plus the task's ``TINY`` entry
(a task without one runs on its first architecture, which is merely slower)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import sigterm_at, tiny_spec, xv
from xvhpc.registry import load_task, task_info, task_infos

TASKS = sorted(task_infos())

# What makes each task's run tiny (the sizes the task's own tests use): the synth arguments and
# the spec sections laid over tiny_spec's (resnet18 from scratch, 32 px, 1 channel, 12 iterations).
TINY: dict[str, dict] = {
    "classify": {"synth": {"per_class": 8, "size": 48}, "spec": {}},
    "detect": {
        "synth": {"per_class": 16, "size": 64},  # 32 images of red and green boxes
        "spec": {
            "data": {
                "image_size": 64,
                "channels": 3,
                "resize": "letterbox",
                "coco": {"group_field": "group"},
            },
            "model": {"arch": "fcos_tiny", "pretrained": "none"},
            "evaluate": {"bootstrap": 1000},
        },
    },
    "action": {
        "synth": {"per_class": 5, "size": 32},  # 10 videos of 6 s at 8 fps, 32 px
        "spec": {
            "data": {"image_size": 32, "channels": 3, "resize": "squash"},
            "model": {"arch": "c3d_tiny", "pretrained": "none"},
            "evaluate": {"bootstrap": 1000},
        },
    },
}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # 2 shared cores: no spinning thread pools
IMAGES = (".png", ".jpg", ".jpeg", ".dcm", ".mp4")  # what a task predicts on: videos too


def _synth(name: str, out: Path) -> Path:
    """The task's demo data (``xvhpc demo-data --task NAME``) and the source a spec names: the
    one manifest it wrote (COCO JSON, CSV), else the folder itself."""
    sizes = TINY.get(name, {}).get("synth", {"per_class": 8, "size": 64})
    args = argparse.Namespace(out=str(out), seed=0, task=name, **sizes)
    assert load_task(name).synth(args) == 0
    manifests = sorted(p for p in out.iterdir() if p.suffix in (".json", ".csv"))
    return manifests[0] if len(manifests) == 1 else out


def _spec(name: str, path: Path, source: Path) -> Path:
    """tiny_spec for task ``name``: its TINY sections, else its first architecture."""
    tiny = TINY.get(name, {}).get("spec", {"model": {"arch": task_info(name).archs[0]}})
    sections = {key: dict(value) for key, value in tiny.items()}
    sections["model"] = {"pretrained": "none", **sections.get("model", {})}
    return tiny_spec(path, source, name=f"contract-{name}", task=name, **sections)


@pytest.fixture(scope="module", params=TASKS)
def tiny_run(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(task, run dir, data source): the whole local pipeline (``xvhpc run``: ingest → train →
    evaluate → report) on the task's own synthetic data."""
    name = request.param
    work = tmp_path_factory.mktemp(f"contract-{name}")
    source = _synth(name, work / "data")
    spec = _spec(name, work / "spec.yaml", source)
    xv("run", str(spec), "--out", str(work / "run"), cwd=work, env=ONE_THREAD)
    return name, work / "run", source


def test_every_task_is_registered_with_its_hooks() -> None:
    assert {"classify", "detect"} <= set(TASKS)
    for name in TASKS:
        task = load_task(name)
        assert task.info == task_info(name), name
        assert task.chunk_suffix == task_info(name).predictions_suffix, name


def test_ingest_train_evaluate_report(tiny_run) -> None:
    """The run's files carry the task's own names: progress holds its selection metric, the
    leaderboard ranks by the spec's rank_by (a metric of the task), the bundle says its task."""
    name, run, _ = tiny_run
    info = task_info(name)
    assert json.loads((run / "manifest.json").read_text())
    progress = json.loads((run / "train" / "0" / "progress.json").read_text())
    assert info.selection in progress and "val_loss" in progress, progress
    assert set(info.val_metrics) <= set(progress), progress
    rank_by = _spec_of(run).get("evaluate", {}).get("rank_by") or info.rank_by[0]
    assert rank_by in info.rank_by
    board = json.loads((run / "eval" / "leaderboard.json").read_text())
    assert board["rank_by"] == rank_by and board["rows"][0]["point"] == 0
    assert rank_by in board["rows"][0], board["rows"][0]
    metrics = json.loads((run / "eval" / "0" / "metrics.json").read_text())
    assert rank_by in metrics, sorted(metrics)
    meta = json.loads((run / "model" / "meta.json").read_text())
    assert meta["task"] == name
    report = (run / "report.html").read_text()
    assert info.title in report or name in report


def _spec_of(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "spec.yaml").read_text())


def _weights(run: Path) -> str:
    ranks = run / "train" / "0" / "ranks" / "rank-0.json"
    return json.loads(ranks.read_text())["weights_sha256"]


def test_a_killed_run_resumes_to_identical_weights(tiny_run, tmp_path: Path) -> None:
    """SIGTERM mid-run → checkpoint, exit 75; the resumed run ends with the same weights as an
    uninterrupted one (both 8 iterations, checkpoints every 4; the same shards)."""
    _, trained, _ = tiny_run
    runs = []
    for label in ("whole", "killed"):
        run = tmp_path / label
        shutil.copytree(trained, run, ignore=shutil.ignore_patterns("train", "model", "eval"))
        runs.append(run)
    short = ["--max-iterations", "8"]
    xv("train", "--run-dir", str(runs[0]), *short, env=ONE_THREAD)
    proc = subprocess.Popen(
        [sys.executable, "-m", "xvhpc", "train", "--run-dir", str(runs[1]), *short],
        env={**os.environ, "XVHPC_PYTHON": sys.executable, **ONE_THREAD},
        stderr=subprocess.PIPE,
        text=True,
    )
    progress = runs[1] / "train" / "0" / "progress.json"
    err = sigterm_at(proc, progress, 4)
    assert proc.returncode == 75, err[-2000:]
    stopped = json.loads(progress.read_text())["iteration"]
    assert 4 <= stopped < 8
    resumed = xv("train", "--run-dir", str(runs[1]), *short, env=ONE_THREAD)
    assert f"resumed from checkpoint at iteration {stopped}" in resumed.stderr
    assert _weights(runs[1]) == _weights(runs[0])


def _few_images(source: Path, out: Path, count: int = 3) -> list[Path]:
    """``count`` of the task's synthetic images, copied into a plain folder."""
    root = source if source.is_dir() else source.parent
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGES)[:count]
    out.mkdir(parents=True)
    for i, path in enumerate(found):
        shutil.copy(path, out / f"{i}{path.suffix}")
    return sorted(out.iterdir())


def test_predict_writes_the_task_s_predictions_file(tiny_run, tmp_path: Path) -> None:
    """The local ``xvhpc predict`` over a few images: OUT/predictions<the task's suffix>."""
    from xvhpc.cli import main

    name, run, source = tiny_run
    images = _few_images(source, tmp_path / "images")
    out = tmp_path / "out"
    assert main(["predict", str(run), "--data", str(tmp_path / "images"), "--out", str(out)]) == 0
    suffix = load_task(name).chunk_suffix
    merged = out / f"predictions{suffix}"
    assert merged.is_file(), sorted(p.name for p in out.iterdir())
    text = merged.read_text()
    assert all(p.name in text for p in images), text[:2000]


def test_serve_answers_with_the_task_s_predictions(tiny_run, tmp_path: Path) -> None:
    """/v1/model and /v1/predict on the bundle (FastAPI TestClient over serve.app)."""
    from fastapi.testclient import TestClient

    from xvhpc.models.bundle import load_bundle
    from xvhpc.serve.app import create_app

    name, run, source = tiny_run
    bundle = load_bundle(run / "model")
    assert bundle.meta["task"] == name
    client = TestClient(create_app(bundle))
    model = client.get("/v1/model").json()
    assert model["arch"] == bundle.meta["arch"] and model["classes"] == bundle.classes
    image = _few_images(source, tmp_path / "images", 1)[0]
    reply = client.post("/v1/predict", files={"file": (image.name, image.read_bytes())})
    assert reply.status_code == 200, reply.text
    assert isinstance(reply.json()["predictions"], list)


def test_export_torchscript(tiny_run, tmp_path: Path) -> None:
    """TorchScript is every task's export: the file loads, its sidecar names the classes."""
    import torch

    from xvhpc.cli import main

    name, run, _ = tiny_run
    assert "torchscript" in load_task(name).exports
    out = tmp_path / "model.pt"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    meta = json.loads((run / "model" / "meta.json").read_text())
    assert sidecar["classes"] == meta["classes"]
    torch.jit.load(str(out))
