"""Training: environment detection, rank-disjoint data, real DDP (torchrun, mpirun), resume, weights."""

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
import torch

from tests.conftest import sigterm_at, tiny_spec, xv
from xvhpc.backends.base import EnvironmentError_
from xvhpc.data.dataset import RankBatches
from xvhpc.models.weights import cached_file
from xvhpc.models.zoo import build_model
from xvhpc.runtime.whoami import batch_task, detect_environment
from xvhpc.spec.schema import ModelSpec
from xvhpc.tasks.classify.info import ARCHITECTURES

# ----------------------------------------------------------------- environment detection
TORCHRUN = {
    "RANK": "3",
    "LOCAL_RANK": "1",
    "WORLD_SIZE": "4",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "node7",
    "MASTER_PORT": "29500",
    "TORCHELASTIC_RUN_ID": "abc",
}
SRUN = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NTASKS": "8",
    "SLURM_JOB_NODELIST": "gpu[01-02]",
    "MASTER_ADDR": "10.0.0.1",
    "MASTER_PORT": "17000",
}
OMPI = {
    "OMPI_COMM_WORLD_RANK": "1",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "OMPI_COMM_WORLD_SIZE": "2",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29400",
}
JSRUN = {
    "JSM_NAMESPACE_RANK": "7",
    "JSM_NAMESPACE_LOCAL_RANK": "1",
    "JSM_NAMESPACE_SIZE": "12",
    "OMPI_COMM_WORLD_RANK": "7",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "OMPI_COMM_WORLD_SIZE": "12",
    "LSB_JOBID": "99",
    "MASTER_PORT": "15099",
}


def test_detects_torchrun() -> None:
    info = detect_environment(TORCHRUN)
    assert (
        info.environment,
        info.rank,
        info.local_rank,
        info.world_size,
        info.master_addr,
        info.master_port,
    ) == ("torchrun", 3, 1, 4, "node7", 29500)


def test_detects_srun() -> None:
    info = detect_environment(SRUN)
    assert (info.environment, info.rank, info.local_rank, info.world_size, info.master_addr) == (
        "slurm",
        5,
        1,
        8,
        "10.0.0.1",
    )


def test_detects_open_mpi() -> None:
    info = detect_environment(OMPI)
    assert (info.environment, info.rank, info.world_size, info.master_port) == (
        "openmpi",
        1,
        2,
        29400,
    )


def test_detects_jsrun(tmp_path: Path) -> None:
    rankfile = tmp_path / "rankfile"
    rankfile.write_text("batch3\n" + "h41n01\n" * 6 + "h41n02\n" * 6)  # launch node first
    info = detect_environment(
        {**JSRUN, "LSB_DJOB_RANKFILE": str(rankfile), "MASTER_ADDR": "h41n01"}
    )
    assert info.environment == "jsrun"
    assert (info.rank, info.local_rank, info.world_size) == (7, 1, 12)


def test_detects_a_single_process() -> None:
    assert detect_environment({}).environment == "single"


def test_jsrun_master_is_first_compute_host_not_launch_node(tmp_path: Path) -> None:
    from xvhpc.backends.lsf.environment import JsrunEnvironment

    rankfile = tmp_path / "rankfile"
    rankfile.write_text("batch3\nh41n01\nh41n01\nh41n02\n")
    assert JsrunEnvironment.first_compute_host({"LSB_DJOB_RANKFILE": str(rankfile)}) == "h41n01"


def test_detection_order_prefers_launcher_over_scheduler() -> None:
    assert detect_environment({**SRUN, **TORCHRUN}).environment == "torchrun"  # srun → torchrun
    assert detect_environment({**OMPI, **JSRUN}).environment == "jsrun"  # jsrun sets OMPI_* too
    assert detect_environment({**SRUN, **OMPI}).environment == "openmpi"  # mpirun in an allocation


def test_missing_slurm_variable_names_it_and_hints() -> None:
    env = {k: v for k, v in SRUN.items() if k != "MASTER_ADDR"}
    with pytest.raises(EnvironmentError_) as info:
        detect_environment(env)
    assert "MASTER_ADDR is not set" in str(info.value)
    assert "HINT:" in str(info.value)
    assert "scontrol show hostnames" in str(info.value)


def test_missing_torchrun_variable_names_it_and_hints() -> None:
    env = {k: v for k, v in TORCHRUN.items() if k != "MASTER_PORT"}
    with pytest.raises(
        EnvironmentError_, match="MASTER_PORT is not set. HINT: launch with `torchrun"
    ):
        detect_environment(env)


def test_array_index_slurm_counts_from_zero() -> None:
    assert batch_task({"SLURM_ARRAY_TASK_ID": "3"}).array_index == 3


def test_array_index_lsf_counts_from_one() -> None:
    assert batch_task({"LSB_JOBINDEX": "3"}).array_index == 2


def test_no_array_index_outside_an_array() -> None:
    assert batch_task({"LSB_JOBINDEX": "0"}).array_index is None  # LSF: not an array job
    assert batch_task({}).array_index is None


def test_cpus_are_the_schedulers_grant() -> None:
    assert batch_task({"SLURM_CPUS_PER_TASK": "6"}).cpus == 6
    assert batch_task({"LSB_DJOB_NUMPROC": "42"}).cpus == 42


def test_no_mpi_rank_without_an_mpi_launcher() -> None:
    task = batch_task({})
    assert (task.mpi_rank, task.mpi_size, task.comm) == (0, 1, None)


def test_rank_batches_are_disjoint_and_cover_an_epoch() -> None:
    a, b = RankBatches(100, 10, 0, 2, seed=1), RankBatches(100, 10, 1, 2, seed=1)
    epoch0_a = sum((a.batch_at(i) for i in range(5)), [])
    epoch0_b = sum((b.batch_at(i) for i in range(5)), [])
    assert not set(epoch0_a) & set(epoch0_b)
    assert len(set(epoch0_a) | set(epoch0_b)) == 100


def test_rank_batches_reshuffle_each_epoch() -> None:
    a = RankBatches(100, 10, 0, 2, seed=1)
    assert a.batch_at(0) != a.batch_at(5)  # next epoch reshuffles


def test_rank_batches_resume_at_their_start() -> None:
    a = RankBatches(100, 10, 0, 2, seed=1)
    resumed = RankBatches(100, 10, 0, 2, seed=1, start=7)
    assert next(iter(resumed)) == a.batch_at(7)


# ----------------------------------------------------------------- models
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_builds_with_new_head(arch: str) -> None:
    model = build_model(ModelSpec(arch=arch, pretrained="none"), num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 3)


def test_custom_import() -> None:
    model = build_model(
        ModelSpec.model_validate({"import": "tests.custom_model:build", "pretrained": "none"}), 5
    )
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 5)


def test_freeze_backbone_trains_the_head_only() -> None:
    frozen = build_model(ModelSpec(arch="resnet18", pretrained="none", freeze_backbone=True), 2)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}


def test_imagenet_weights_missing_from_cache_say_how_to_fetch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XVHPC_WEIGHTS", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="xvhpc weights fetch googlenet"):
        build_model(ModelSpec(arch="googlenet", pretrained="imagenet"), 4)


def test_imagenet_weights_only_from_cache(tmp_path: Path, monkeypatch) -> None:
    import torchvision

    monkeypatch.setenv("XVHPC_WEIGHTS", str(tmp_path / "cache"))
    # a cache filled (here by hand, as `weights fetch` would) loads without any network
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    path = cached_file("googlenet")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = build_model(ModelSpec(arch="googlenet", pretrained="imagenet"), 4)
    assert model.aux1 is None
    assert model.fc.out_features == 4
    assert torch.equal(model.conv1.conv.weight, reference.conv1.conv.weight)


# ----------------------------------------------------------------- real training
@pytest.fixture(scope="module")
def ingested(tmp_path_factory, demo_data) -> Path:
    work = tmp_path_factory.mktemp("ingested")
    spec = tiny_spec(
        work / "spec.yaml",
        demo_data,
        train={"max_iterations": 16, "checkpoint_every": 4, "log_every": 1, "val_every": 8},
    )
    xv("compile", str(spec), "--out", str(work / "run"))
    xv("ingest", "--run-dir", str(work / "run"), "--shard", "all", "--merge")
    return work / "run"


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
def test_checkpoint_loads_weights_only_and_restores_every_rng(tmp_path: Path) -> None:
    import random

    from xvhpc.runtime.checkpoint import load_checkpoint, restore_rng, save_checkpoint

    np.random.seed(7)
    random.seed(7)
    torch.manual_seed(7)
    np.random.normal()  # numpy caches a second gaussian: its cache must round-trip too
    state = {k: {} for k in ("model", "optimizer", "scheduler", "scaler")}
    save_checkpoint(tmp_path / "checkpoint.pt", {**state, "iteration": 3, "best": 0.5})
    expected = (np.random.normal(), np.random.randint(1 << 30), random.random(), torch.rand(1))
    np.random.seed(99)
    random.seed(99)
    torch.manual_seed(99)
    loaded = load_checkpoint(tmp_path / "checkpoint.pt", map_location="cpu")
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 3
    restore_rng(loaded)
    assert np.random.normal() == expected[0]
    assert np.random.randint(1 << 30) == expected[1]
    assert random.random() == expected[2]
    assert torch.equal(torch.rand(1), expected[3])


def test_best_checkpoint_follows_the_selection_metric_in_either_direction(tmp_path: Path) -> None:
    """The best bundle is chosen by the task's ``selection`` metric and ``mode``; a checkpoint
    holds None before the first validation, and an old one's -1.0 reads as none yet, so a
    min-mode metric's first round after a resume still counts as the best."""
    import dataclasses

    from xvhpc.registry import task_info
    from xvhpc.runtime.checkpoint import checkpoint_best, load_checkpoint, save_checkpoint

    state = {k: {} for k in ("model", "optimizer", "scheduler", "scaler")}
    save_checkpoint(tmp_path / "checkpoint.pt", {**state, "iteration": 0, "best": None})
    assert checkpoint_best(load_checkpoint(tmp_path / "checkpoint.pt", map_location="cpu")) is None
    assert checkpoint_best({"best": -1.0}) is None  # written before issue 21
    assert checkpoint_best({"best": 0.25}) == 0.25
    assert task_info("classify").selection == "val_accuracy"
    assert task_info("detect").selection == "val_map50"
    highest = task_info("classify")
    lowest = dataclasses.replace(highest, selection="val_loss", mode="min")
    assert highest.better(0.1, None) and lowest.better(9.0, None)
    assert highest.better(0.6, 0.5) and not highest.better(0.4, 0.5)
    assert lowest.better(0.4, 0.5) and not lowest.better(0.6, 0.5)


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


def test_jsrun_without_a_working_mpi4py_stops_with_a_clear_error() -> None:
    """Summit needs mpi4py and says so (issue 22 N2): without it 8 ingest ranks would each
    believe they are rank 0 of 1, and packed points would wait on node 1 for 600 s."""
    jsrun = {"JSM_NAMESPACE_SIZE": "8", "JSM_NAMESPACE_RANK": "3", "JSM_NAMESPACE_LOCAL_RANK": "3"}
    code = (
        "import sys, json; from xvhpc.runtime.whoami import batch_task\n"
        "from xvhpc.runtime.whoami import detect_environment\n"
        "if sys.argv[1] == 'absent': sys.modules['mpi4py'] = None\n"
        "for f in (batch_task, detect_environment):\n"
        "    try: f(json.loads(sys.argv[2])); print('no error')\n"
        "    except Exception as e: print(type(e).__name__, e)\n"
    )
    for case, said in (("absent", "mpi4py does not import"), ("singleton", "mpi4py sees 1 rank")):
        out = subprocess.run(
            [sys.executable, "-c", code, case, json.dumps(jsrun)],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.splitlines()
        assert len(out) == 2, out
        for line in out:
            assert line.startswith("EnvironmentError_ ") and "HINT:" in line, line
            assert said in line or "mpi4py" in line, line
        assert said in out[0], out
