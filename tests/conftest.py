"""Shared fixtures: the CLI as a subprocess, tiny datasets and specs, real-service guards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
IN_CI = os.environ.get("CI") == "true"


def xv(
    *args: str,
    cwd: str | Path | None = None,
    env: dict | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Run ``python -m xvhpc ARGS`` and return the finished process (stdout/stderr as text)."""
    full_env = {**os.environ, "XVHPC_PYTHON": sys.executable, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "xvhpc", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"xvhpc {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def sigterm_at(proc: subprocess.Popen, progress: Path, iteration: int, timeout: float = 300) -> str:
    """SIGTERM a training process once its progress file reaches ``iteration``; its stderr."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.exists() and json.loads(progress.read_text()).get("iteration", 0) >= iteration:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=timeout)[1]


def wait_final(run: Path, timeout: float = 420) -> dict:
    """Poll `xvhpc status --json` until no step is pending or running."""
    from xvhpc.backends.base import FINAL_BAD, FINAL_OK

    deadline = time.monotonic() + timeout
    while True:
        proc = xv("status", str(run), "--json", check=False)
        states = json.loads(proc.stdout) if proc.stdout.strip() else {}
        if states and all(s["state"] in FINAL_OK | FINAL_BAD for s in states.values()):
            return states
        if time.monotonic() > deadline:
            logs = xv("logs", str(run), check=False).stdout[-4000:]
            raise AssertionError(f"timed out; states {states}\nlogs:\n{logs}")
        time.sleep(2)


def wait_iteration(run: Path, at_least: int, timeout: float = 480) -> int:
    """Poll a run's progress.json until training runs at ``at_least`` iterations or more."""
    progress = run / "train" / "0" / "progress.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = json.loads(progress.read_text())
            if state.get("state") == "running" and state.get("iteration", 0) >= at_least:
                return state["iteration"]
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"training never reached iteration {at_least}")


def require(tool: str, why: str) -> None:
    """Skip locally when a real tool is missing; in CI a missing tool is a failure, never a skip."""
    if shutil.which(tool) is None:
        if IN_CI:
            pytest.fail(
                f"{tool} is required in CI ({why}) but is not installed; .ci/run installs it"
            )
        pytest.skip(f"{tool} not installed ({why})")


def tiny_spec(path: Path, source: Path, **sections) -> Path:
    """A tiny, fast spec (32 px, resnet18 from scratch, few iterations); sections override."""
    spec = {
        "name": "tiny",
        "data": {
            "source": str(source),
            "image_size": 32,
            "channels": 1,
            "shards": 2,
            "split": {"validation": 0.25, "seed": 1},
        },
        "model": {"arch": "resnet18", "pretrained": "none"},
        "train": {
            "max_iterations": 12,
            "batch_size": 8,
            "learning_rate": 0.01,
            "amp": False,
            "checkpoint_every": 4,
            "val_every": 6,
            "log_every": 2,
            "workers": 0,
        },
        "resources": {"nodes": 1, "processes_per_node": 1, "walltime": "00:20:00"},
        "evaluate": {"heatmap_samples": 2},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def synthetic(n: int, seed: int = 0, k: int = 3, signal: float = 1.5, round_to: int | None = 2):
    """Labels and softmax outputs of a mediocre classifier (rounded: ties in the scores)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += signal
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, (np.round(probs, round_to) if round_to else probs)


def backend_site(tmp_path: Path, scheduler: str, launcher: str = "local") -> Path:
    """A copy of x86-v100 with another scheduler and launcher, each with its default options."""
    data = yaml.safe_load((ROOT / "site_configs" / "x86-v100.yaml").read_text())
    data.update(name=f"contract-{scheduler}", scheduler=scheduler, launcher=launcher)
    data.pop("scheduler_options", None)  # each backend's own: its defaults here
    data.pop("launcher_options", None)
    path = tmp_path / f"{scheduler}-{launcher}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _needs_shared_data(item: pytest.Item) -> bool:
    """True when the test's own code names ``SHARED_DATA`` or a module path under it (``CXR``).

    Read from the function's code, so a new test that uses the real X-rays is skipped on a
    machine without ``../shared`` with no marker to remember.
    """
    function = getattr(item, "function", None)
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    names = set(code.co_names)
    for const in code.co_consts:  # nested functions and comprehensions
        names |= set(getattr(const, "co_names", ()))
    module = vars(getattr(item, "module", None) or object())
    for name in names:
        value = module.get(name)
        if isinstance(value, Path) and (value == SHARED_DATA or SHARED_DATA in value.parents):
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with one line of reason, the tests that need ``../shared/data`` when it is absent
    (a fresh clone); where it is present (CI, the developers' machines) they run."""
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs the real chest X-rays at {SHARED_DATA} (absent)")
    for item in items:
        if _needs_shared_data(item):
            item.add_marker(skip)


E2E_LOCK = Path(tempfile.gettempdir()) / f"xvhpc-e2e-{os.getuid()}.lock"


@pytest.fixture(autouse=True)
def _one_end_to_end_test_at_a_time(request: pytest.FixtureRequest):
    """Under ``pytest -n 2`` (scripts/test.sh) the end-to-end tests (real Slurm, OpenLava,
    launchers, containers) take turns: each holds an exclusive lock while it runs, so two of
    them never share the 2-node cluster (a job of one would hold the nodes another waits on,
    or change the queue it checks), while the other worker goes on with the unit tests."""
    if request.node.get_closest_marker("e2e") is None:
        yield
        return
    import fcntl

    with open(E2E_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from xvhpc.data.synth import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "demo", per_class=12, size=64, seed=3)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, demo_data) -> Path:
    """One real local pipeline (ingest → train under torchrun → evaluate → report), shared."""
    work = tmp_path_factory.mktemp("trained")
    spec = tiny_spec(work / "spec.yaml", demo_data, train={"max_iterations": 20})
    xv("run", str(spec), "--out", str(work / "run"), cwd=work)
    return work / "run"


@pytest.fixture(scope="session")
def ingested(tmp_path_factory, demo_data) -> Path:
    """An ingested classification run, not trained (its users ``fresh()`` it before training):
    shared by the training unit tests and the real DDP launches of tests/e2e."""
    work = tmp_path_factory.mktemp("ingested")
    spec = tiny_spec(
        work / "spec.yaml",
        demo_data,
        train={"max_iterations": 16, "checkpoint_every": 4, "log_every": 1, "val_every": 8},
    )
    xv("compile", str(spec), "--out", str(work / "run"))
    xv("ingest", "--run-dir", str(work / "run"), "--shard", "all", "--merge")
    return work / "run"


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """200 files to predict: 191 small PNG/JPEG X-rays, 4 DICOMs, 5 bad ones."""
    from PIL import Image

    from xvhpc.data.synth import write_dicom, xray

    root = tmp_path_factory.mktemp("to-predict")
    rng = np.random.default_rng(5)
    labels = ("normal", "covid19", "bacterial", "viral")
    for i in range(191):
        folder = root / f"batch{i // 64}"
        folder.mkdir(exist_ok=True)
        pixels = xray(labels[i % 4], 32 + (i % 3) * 8, rng)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.{'png' if i % 2 else 'jpg'}")
    for i in range(4):
        write_dicom(root / f"scan{i}.dcm", xray(labels[i], 40, rng))
    (root / "bad").mkdir()
    (root / "bad" / "empty.png").write_bytes(b"")
    (root / "bad" / "notes.png").write_text("not an image")
    (root / "bad" / "readme.txt").write_text("hello")
    (root / "bad" / "y.gif").write_bytes(b"GIF89a" + bytes(5))
    (root / "bad" / "trunc.jpg").write_bytes((root / "batch0" / "img000.jpg").read_bytes()[:80])
    return root


def predict(run: Path, data: Path, out: Path, *extra: str, check: bool = True):
    """``xvhpc predict RUN --data DATA --out OUT`` in chunks of 50 files."""
    return xv(
        "predict", str(run), "--data", str(data), "--out", str(out), "--chunk-size", "50", *extra,
        check=check,
    )  # fmt: skip


@pytest.fixture(scope="session")
def local_run(trained_run: Path, images: Path, tmp_path_factory) -> Path:
    """``images`` predicted by ``trained_run`` as a local run (the Slurm array must match it)."""
    out = tmp_path_factory.mktemp("predict-local") / "out"
    predict(trained_run, images, out)
    return out


@pytest.fixture
def slurm_up() -> None:
    """The real local Slurm from scripts/slurm.sh must be up (CI starts it)."""
    require("sbatch", "the real-Slurm tests")
    ok = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if ok.returncode != 0 or "idle" not in ok.stdout and "mixed" not in ok.stdout:
        message = f"local Slurm is not up (sinfo: {ok.stdout.strip()} {ok.stderr.strip()}); run: bash scripts/slurm.sh"
        pytest.fail(message) if IN_CI else pytest.skip(message)


@pytest.fixture
def openlava_up() -> None:
    """The real local OpenLava from scripts/openlava.sh must be up (CI starts it)."""
    require("bsub", "the real-LSF (OpenLava) tests")
    ok = subprocess.run(["bhosts", "-w"], capture_output=True, text=True)
    if ok.returncode != 0 or " ok " not in ok.stdout:
        message = f"local OpenLava is not up (bhosts: {ok.stdout.strip()} {ok.stderr.strip()}); run: bash scripts/openlava.sh"
        pytest.fail(message) if IN_CI else pytest.skip(message)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """A model bundle without training (serve only needs weights and meta): the hostile tests'."""
    import torch

    from xvhpc.data.manifest import preprocessing
    from xvhpc.models.bundle import save_bundle
    from xvhpc.models.zoo import build_model
    from xvhpc.spec.schema import ExperimentSpec

    spec = ExperimentSpec.model_validate(
        {
            "name": "hostile",
            "data": {"source": "x", "image_size": 32, "channels": 1},
            "model": {"arch": "resnet18", "pretrained": "none"},
            "deploy": {"threshold": 0.9},
        }
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bundle") / "model"
    save_bundle(
        out, build_model(spec.model, 3), spec, ["a", "b", "c"], preprocessing(spec.data), 0, {}
    )
    return out


@pytest.fixture(scope="module")
def client(bundle_dir: Path):
    """A TestClient on ``bundle_dir`` (serve.app, in-process)."""
    from fastapi.testclient import TestClient

    from xvhpc.models.bundle import load_bundle
    from xvhpc.serve.app import create_app

    return TestClient(create_app(load_bundle(bundle_dir)))
