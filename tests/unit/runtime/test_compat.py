"""xvhpc on torch 2.0.1 / torchvision 0.15.2 (Summit's newest Open-CE pair) and on the x86 pair.

The shim and version tests run in every environment. The pipeline test runs where
``XVHPC_COMPAT=1``: CI's compat block, in ``.venv-torch20`` (``scripts/compat_env.sh``):

    XVHPC_COMPAT=1 .venv-torch20/bin/python -m pytest tests/unit/runtime/test_compat.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import ROOT, tiny_spec, xv
from xvhpc.runtime import compat
from xvhpc.spec import load_site

IN_COMPAT_ENV = os.environ.get("XVHPC_COMPAT") == "1"
compat_only = pytest.mark.skipif(
    not IN_COMPAT_ENV,
    reason="runs in .venv-torch20 (scripts/compat_env.sh): "
    "XVHPC_COMPAT=1 .venv-torch20/bin/python -m pytest tests/unit/runtime/test_compat.py (CI's compat block)",
)


# ----------------------------------------------------------------- the minimum, in one place
def test_version_comparison() -> None:
    assert compat.version_tuple("2.0.1+cu117") == (2, 0, 1)
    assert compat.below_minimum("1.13.1")
    assert compat.below_minimum("2.0")  # 2.0.0 < 2.0.1
    assert not compat.below_minimum("2.0.1")
    assert not compat.below_minimum("2.14.1")
    assert not compat.below_minimum("2.0.1a0+git1234")  # suffixes ignored, not compared
    with pytest.raises(ValueError, match="not a version"):
        compat.version_tuple("latest")


def _non_x86_minimum(pyproject: str, name: str) -> str:
    """The lower bound of ``"NAME>=X; platform_machine != 'x86_64'"`` (no tomllib on 3.10)."""
    found = re.findall(rf"\"{name}>=([0-9.]+); platform_machine != 'x86_64'\"", pyproject)
    assert len(found) == 1, f"one non-x86 {name} requirement in pyproject.toml, found {found}"
    return found[0]


def test_minimum_agrees_with_pyproject_and_the_compat_env() -> None:
    """MIN_TORCH, pyproject's non-x86 markers and the compat env's pins say the same version."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert _non_x86_minimum(pyproject, "torch") == compat.MIN_TORCH
    assert _non_x86_minimum(pyproject, "torchvision") == compat.MIN_TORCHVISION
    pins = (ROOT / "envs" / "torch20-constraints.txt").read_text()
    assert f"\ntorch=={compat.MIN_TORCH}\n" in pins
    assert f"\ntorchvision=={compat.MIN_TORCHVISION}\n" in pins
    assert re.search(r"\nnumpy==1\.", pins)  # torch 2.0.1 wheels need numpy 1.x
    # the lock is installed --no-deps: it must hold every dependency xvhpc declares
    locked = {_name(line) for line in pins.splitlines() if line and not line.startswith("#")}
    declared = re.findall(r'^  "([A-Za-z0-9_.-]+)', pyproject.split("[project.optional")[0], re.M)
    assert declared and {_name(d) for d in declared} - locked == set()


def _name(requirement: str) -> str:
    """The normalised distribution name of ``name==1.0`` / ``Name_x>=2``."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)).lower()


def _site_with_torch(tmp_path: Path, version: str) -> Path:
    site = yaml.safe_load((ROOT / "site_configs" / "summit.yaml").read_text())
    site["name"] = "old-summit"
    site["env"]["torch"] = version
    path = tmp_path / "old-summit.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def _spec(tmp_path: Path) -> Path:
    return tiny_spec(
        tmp_path / "spec.yaml",
        tmp_path / "data",
        resources={"account": "ABC123"},
    )


def test_validate_warns_when_a_site_declares_an_older_torch(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    old = xv("validate", str(spec), "--site", str(_site_with_torch(tmp_path, "1.13.1")))
    assert "OK" in old.stdout
    assert "warning: site old-summit: env.torch is 1.13.1, older than torch 2.0.1" in old.stderr
    shipped = xv("validate", str(spec), "--site", "summit", cwd=ROOT)
    assert load_site(str(ROOT / "site_configs" / "summit.yaml")).env.torch == compat.MIN_TORCH
    assert "warning" not in shipped.stderr


def test_a_malformed_site_torch_is_an_error_naming_the_key(tmp_path: Path) -> None:
    proc = xv(
        "validate",
        str(_spec(tmp_path)),
        "--site",
        str(_site_with_torch(tmp_path, "two")),
        check=False,
    )
    assert proc.returncode != 0
    assert "env.torch" in proc.stderr and "Traceback" not in proc.stderr


def test_login_side_reads_the_minimum_without_torch() -> None:
    code = (
        "import sys; from xvhpc.runtime.compat import MIN_TORCH, site_torch_warning; "
        "assert site_torch_warning('s', '1.12') and 'torch' not in sys.modules, sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ----------------------------------------------------------------- the shims, on this torch
def test_amp_dtype_per_setting_and_device() -> None:
    assert compat.amp_dtype(True, "cuda") is torch.float16
    assert compat.amp_dtype("float16", "cuda") is torch.float16
    assert compat.amp_dtype(True, "cpu") is None  # no CPU float16 autocast on torch 2.0.1
    assert compat.amp_dtype("bfloat16", "cpu") is torch.bfloat16
    assert compat.amp_dtype("bfloat16", "cuda") is torch.bfloat16
    assert compat.amp_dtype(False, "cuda") is None


def test_scaler_and_autocast_without_warnings() -> None:
    """``torch.amp.GradScaler`` is missing on 2.0.1; ``torch.cuda.amp``'s warns on 2.4+; a
    disabled float16 autocast on CPU warns on 2.0.1. The shims do none of these."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaler = compat.grad_scaler(enabled=False)
        with compat.autocast("cpu", None):
            pass
        with compat.autocast("cpu", torch.bfloat16):
            y = torch.nn.Linear(4, 2)(torch.ones(1, 4))
    assert y.dtype is torch.bfloat16
    assert scaler.state_dict() == {}  # disabled: nothing to checkpoint
    loss = torch.ones((), requires_grad=True)
    assert scaler.scale(loss) is loss


def test_onnx_export_arguments_fit_this_torch() -> None:
    import inspect

    has_dynamo = "dynamo" in inspect.signature(torch.onnx.export).parameters
    assert compat.onnx_export_kwargs() == ({"dynamo": False} if has_dynamo else {})


# ----------------------------------------------------------------- the pipeline on torch 2.0.1
@compat_only
def test_pipeline_on_the_open_ce_pair(tmp_path: Path) -> None:
    """ingest → 2-process DDP training with bfloat16 autocast → evaluate → report → export
    (TorchScript and ONNX) → resume state, all on torch 2.0.1 / torchvision 0.15.2."""
    import torchvision

    assert torch.__version__.split("+")[0] == compat.MIN_TORCH
    assert torchvision.__version__.split("+")[0] == compat.MIN_TORCHVISION
    assert np.__version__.startswith("1.")
    from xvhpc.data.synth import make_dataset

    source = make_dataset(tmp_path / "data", per_class=8, size=48, seed=3)
    spec = tiny_spec(
        tmp_path / "spec.yaml",
        source,
        train={
            "max_iterations": 2,  # bfloat16 on a CPU without bf16 units: seconds a step
            "batch_size": 4,
            "amp": "bfloat16",
            "checkpoint_every": 1,
            "val_every": 2,
        },
        resources={"nodes": 1, "processes_per_node": 2, "walltime": "00:20:00"},
    )
    run = tmp_path / "run"
    xv("run", str(spec), "--out", str(run), cwd=tmp_path)

    train_log = (run / "logs" / "train-local.out").read_text()
    assert "rank 0/2 (torchrun)" in train_log
    assert f"torch {torch.__version__}, autocast torch.bfloat16" in train_log
    ranks = sorted((run / "train" / "0" / "ranks").iterdir())
    digests = {json.loads(p.read_text())["weights_sha256"] for p in ranks}
    assert len(ranks) == 2 and len(digests) == 1  # DDP kept both ranks' weights identical
    evaluation = json.loads((run / "eval" / "0" / "metrics.json").read_text())
    assert "accuracy" in evaluation  # (a value, or a value with its interval)
    report = (run / "report.html").read_text()
    assert "bfloat16" in report and "data:image/png" in report  # Grad-CAM heatmaps on 2.0.1

    _check_exports(run)
    _check_checkpoint(run / "train" / "0" / "checkpoint.pt")


def _check_exports(run: Path) -> None:
    """Both formats load outside xvhpc and give the bundle's logits."""
    import onnxruntime

    from xvhpc.models.bundle import load_bundle
    from xvhpc.serve.export import export

    bundle = load_bundle(run / "model")
    x = torch.randn(2, 3, bundle.size, bundle.size)
    with torch.no_grad():
        expected = bundle.model(x).numpy()
    export(run, "torchscript")  # in this process: one torch import less (the CLI is thin)
    scripted = torch.jit.load(str(run / "export" / "model.pt"))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x).numpy(), expected, rtol=1e-4, atol=1e-4)
    export(run, "onnx")
    session = onnxruntime.InferenceSession(str(run / "export" / "model.onnx"))
    (got,) = session.run(["logits"], {"image": x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def _check_checkpoint(path: Path) -> None:
    """The checkpoint loads with weights_only=True on 2.0.1, scaler state included."""
    from xvhpc.runtime.checkpoint import load_checkpoint, restore_rng

    state = load_checkpoint(path, map_location="cpu")
    assert state["iteration"] == 2 and state["scaler"] == {}  # bfloat16: no loss scaling
    restore_rng(state)
    assert torch.equal(torch.get_rng_state(), state["rng"])


# ----------------------------------------------------------------- the Open-CE recipe (POWER9)
# Lmod's `module` and conda's `conda` are shell functions that read unset variables
# (conda/conda#8186): the stand-ins do the same, so `set -u` around them fails as it would there.
STANDINS = r"""
module() {
  echo "module $*" >> "$XV_LOG"; : "$LMOD_UNSET_PROBE"
  export CONDA_DEFAULT_ENV=open-ce-1.10.0-py311-ibm
}
conda() {
  echo "conda $*" >> "$XV_LOG"; : "$CONDA_UNSET_PROBE"
  if [[ $1 == create ]]; then
    mkdir -p "$4/bin"
    printf '%s\n' '#!/bin/bash' \
      'if [[ $1 == -m && $2 == pip ]]; then echo "pip ${*:3}" >> "$XV_LOG"; exit 0; fi' \
      'if [[ $1 == -c && " $XV_MISSING " == *" ${2#import } "* ]]; then exit 1; fi' \
      "exec $XV_PYTHON \"\$@\"" > "$4/bin/python"
    chmod +x "$4/bin/python"
  fi
}
"""


def _standin_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "standins.sh").write_text(STANDINS)
    return {
        **os.environ,
        "BASH_ENV": str(tmp_path / "standins.sh"),
        "XV_LOG": str(tmp_path / "calls.log"),
        "XV_PYTHON": sys.executable,
        "XV_MISSING": "h5py ttach mpi4py",
    }


def test_summit_recipe_clones_adds_and_prints_the_env(tmp_path: Path) -> None:
    """envs/summit-opence.sh under `set -euo pipefail` with stand-in module/conda/pip: clone,
    conda for compiled packages, pip pinned to the env's torch, --no-deps where pip would
    resolve torch, and an env: block that validates with an absolute python."""
    from xvhpc.spec.site import Environment

    prefix = tmp_path / "xvhpc-opence"
    env = _standin_env(tmp_path)
    proc = subprocess.run(
        ["bash", str(ROOT / "envs" / "summit-opence.sh"), str(prefix)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[:3] == [
        "module load open-ce/1.10.0-py311-ibm",
        f"conda create --yes --prefix {prefix} --clone open-ce-1.10.0-py311-ibm",
        f"conda activate {prefix}",
    ]
    assert f"conda install --yes --prefix {prefix} --freeze-installed h5py" in calls
    assert f"pip install --constraint {prefix}/xvhpc-pins.txt ttach" in calls
    assert f"pip install --no-deps grad-cam>=1.5 {ROOT}" in calls
    # mpi4py from source against the site's MPI, as OLCF documents (issue 22 N2)
    assert "pip install --no-cache-dir --no-binary=mpi4py mpi4py" in calls
    pins = (prefix / "xvhpc-pins.txt").read_text()
    assert f"torch=={version('torch')}\n" in pins and f"numpy=={version('numpy')}\n" in pins
    block = yaml.safe_load(proc.stdout[proc.stdout.index("env:") :])["env"]
    printed = Environment.model_validate(block)
    assert printed.python == f"{prefix}/bin/python" and Path(printed.python).is_absolute()
    assert printed.torch == torch.__version__.split("+")[0]
    assert printed.modules == ["open-ce/1.10.0-py311-ibm"]
    assert printed.setup == [f"conda activate {prefix}"]


def _prologue(script: str) -> str:
    """A job script up to its python line, then print that python."""
    lines = script.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("XVHPC_PY="))
    return "\n".join([*lines[: end + 1], 'echo "PY=$XVHPC_PY"']) + "\n"


@pytest.mark.parametrize("site", ["summit", "power9-slurm"])
def test_site_env_survives_set_u_in_the_job_script(tmp_path: Path, site: str) -> None:
    """The shipped env: in a compiled train script, run by bash (set -euo pipefail) with
    stand-ins that read unset variables as Lmod/conda do: it passes with the set +u wrapping
    and fails without it (the failure the wrapping prevents)."""
    out = tmp_path / "run"
    xv(
        "compile",
        str(ROOT / "jobs" / "covid_xray.yaml"),
        "--site",
        site,
        "--out",
        str(out),
        cwd=ROOT,
    )
    train = next(p for p in (out / "scripts").iterdir() if p.name.startswith("train."))
    prologue = _prologue(train.read_text())
    env = _standin_env(tmp_path)
    ok = subprocess.run(["bash", "-c", prologue], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    python = load_site(site).env.python
    assert f"PY={python}" in ok.stdout and python.startswith("/")
    unwrapped = "\n".join(
        line for line in prologue.splitlines() if line not in ("set +u", "set -u")
    )
    bad = subprocess.run(["bash", "-c", unwrapped], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "unbound variable" in bad.stderr
