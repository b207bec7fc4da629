"""Training on an ingested run: resume after SIGTERM, a run-limit signal during start-up, missing
weights, learnable numbers, hyperparameters, refused checkpoints, the bundle's preprocessing (real
DDP under torchrun/mpirun: tests/e2e/test_train_ddp.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import sigterm_at, xv


# ----------------------------------------------------------------- real training
def fresh(run: Path) -> Path:
    import shutil

    for name in ("train", "model"):
        shutil.rmtree(run / name, ignore_errors=True)
    return run


def check_ranks(run: Path, world: int, environment: str) -> None:
    ranks = [
        json.loads((run / "train" / "0" / "ranks" / f"rank-{r}.json").read_text())
        for r in range(world)
    ]
    assert {r["environment"] for r in ranks} == {environment}
    assert {r["world_size"] for r in ranks} == {world}
    assert len({r["weights_sha256"] for r in ranks}) == 1, (
        "ranks hold different weights after DDP steps"
    )
    seen = [set(sum(r["first_batches"], [])) for r in ranks]
    assert not seen[0] & seen[1], "ranks read overlapping samples"
    progress = json.loads((run / "train" / "0" / "progress.json").read_text())
    assert progress["state"] == "done"
    assert progress["iteration"] == 16
    assert progress["world_size"] == world
    lines = [
        json.loads(x) for x in (run / "train" / "0" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("val_accuracy" in x for x in lines)
    assert all("data_wait_fraction" in x for x in lines if "loss" in x)
    assert (run / "model" / "weights.pt").exists()
    assert json.loads((run / "model" / "meta.json").read_text())["classes"]


def weights_of(run: Path) -> str:
    return json.loads((run / "train" / "0" / "ranks" / "rank-0.json").read_text())["weights_sha256"]


def test_sigterm_checkpoint_and_resume_equal_weights(ingested: Path) -> None:
    run = fresh(ingested)
    xv("train", "--run-dir", str(run))
    uninterrupted = weights_of(run)
    run = fresh(ingested)
    env = {**os.environ, "XVHPC_PYTHON": sys.executable}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xvhpc", "train", "--run-dir", str(run)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    progress = run / "train" / "0" / "progress.json"
    err = sigterm_at(proc, progress, 5)
    assert proc.returncode == 75, err[-2000:]
    state = json.loads(progress.read_text())
    assert state["state"] == "checkpointed"
    assert 5 <= state["iteration"] < 16
    resumed = xv("train", "--run-dir", str(run))
    assert f"resumed from checkpoint at iteration {state['iteration']}" in resumed.stderr
    assert weights_of(run) == uninterrupted
    events = [
        json.loads(x) for x in (run / "train" / "0" / "metrics.jsonl").read_text().splitlines()
    ]
    iterations = [e["iteration"] for e in events if "loss" in e]
    assert iterations == sorted(iterations)
    assert len(iterations) == len(set(iterations)) == 16
    assert any(e.get("event") == "resumed" for e in events)


def _torch_loaded(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def _catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_a_run_limit_signal_during_start_up_checkpoints_instead_of_killing(ingested: Path) -> None:
    """LSF signals every process of the job at its run limit: a SIGUSR2 that lands while torch
    is still importing must not kill the rank ("exited on signal 12"); it checkpoints at once."""
    run = fresh(ingested)
    proc = subprocess.Popen(
        [sys.executable, "-m", "xvhpc", "train", "--run-dir", str(run)],
        env={**os.environ, "XVHPC_PYTHON": sys.executable},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if _catches(proc.pid, signal.SIGUSR2) or _torch_loaded(proc.pid):
            break
        time.sleep(0.005)
    assert not _torch_loaded(proc.pid), "the stop signals must be held before torch loads"
    proc.send_signal(signal.SIGUSR2)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-2000:]
    state = json.loads((run / "train" / "0" / "progress.json").read_text())
    assert state["state"] == "checkpointed"
    assert state["iteration"] <= 1


def test_missing_weights_error_in_step(ingested: Path, tmp_path: Path) -> None:
    run = fresh(ingested)
    text = (run / "spec.yaml").read_text().replace("pretrained: none", "pretrained: imagenet")
    (run / "spec.yaml").write_text(text)
    try:
        proc = xv(
            "train",
            "--run-dir",
            str(run),
            env={"XVHPC_WEIGHTS": str(tmp_path / "empty")},
            check=False,
        )
    finally:
        (run / "spec.yaml").write_text(text.replace("pretrained: imagenet", "pretrained: none"))
    assert proc.returncode == 2
    assert "xvhpc weights fetch resnet18" in proc.stderr


def test_numbers_learnable(trained_run: Path) -> None:
    """The tiny pipeline run learns something: better than chance on 4 classes."""
    metrics = json.loads((trained_run / "eval" / "0" / "metrics.json").read_text())
    assert metrics["accuracy"]["value"] > 0.3
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["samples"]


def test_imbalance_options_and_other_hyperparameters(ingested: Path) -> None:
    """balanced sampling, class weights, adamw, step schedule with warmup, smoothing, clipping, RAM cache."""
    run = fresh(ingested)
    original = (run / "spec.yaml").read_text()
    extra = (
        "  balanced_sampling: true\n  class_weights: auto\n  optimizer: adamw\n  schedule: step\n"
        "  step_size: 4\n  warmup_iterations: 2\n  label_smoothing: 0.1\n  grad_clip: 1.0\n"
        "  cache_in_memory: true\n  scale_lr: true\n"
    )
    (run / "spec.yaml").write_text(original.replace("train:\n", "train:\n" + extra, 1))
    try:
        xv("train", "--run-dir", str(run), "--max-iterations", "8")
    finally:
        (run / "spec.yaml").write_text(original)
    lines = [
        json.loads(x) for x in (run / "train" / "0" / "metrics.jsonl").read_text().splitlines()
    ]
    lrs = [x["lr"] for x in lines if "lr" in x]
    # warmup over 2 iterations, then x0.1 every 4 (logged after each step, base 0.01)
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 1e-3, 1e-3, 1e-3, 1e-3, 1e-4])
    assert json.loads((run / "train" / "0" / "progress.json").read_text())["iteration"] == 8


# ----------------------------------------------------------------- checkpoints load without unpickling
def test_pickle_payload_checkpoint_is_refused_on_resume(ingested: Path, tmp_path: Path) -> None:
    from tests.payload import payload_is_live, write_payload

    assert payload_is_live(tmp_path), (
        "the payload must run when unpickled, or this test proves nothing"
    )
    run = fresh(ingested)
    marker = tmp_path / "marker"
    checkpoint = write_payload(run / "train" / "0" / "checkpoint.pt", marker)
    proc = xv("train", "--run-dir", str(run), check=False)
    assert proc.returncode == 2
    assert f"xvhpc: error: {checkpoint}: refused" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists(), "the checkpoint was unpickled: its payload ran"


def test_corrupt_checkpoint_is_a_clear_error_naming_it(ingested: Path) -> None:
    run = fresh(ingested)
    checkpoint = run / "train" / "0" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"PK\x03\x04 truncated")
    proc = xv("train", "--run-dir", str(run), check=False)
    assert proc.returncode == 2
    assert f"xvhpc: error: {checkpoint}: not a readable PyTorch file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bundle_preprocessing_is_the_manifests(ingested: Path) -> None:
    """Written once by ingest, carried into the bundle unchanged (pixel guard and frames too)."""
    run = fresh(ingested)
    xv("train", "--run-dir", str(run), "--max-iterations", "1")
    manifest = json.loads((run / "manifest.json").read_text())["preprocessing"]
    for bundle in (run / "train" / "0" / "model", run / "model"):
        meta = json.loads((bundle / "meta.json").read_text())
        assert meta["preprocessing"] == manifest
    assert manifest["max_image_pixels"] == 200_000_000
    assert manifest["dicom_frames"] == "first"
