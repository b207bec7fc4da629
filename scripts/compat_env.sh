#!/usr/bin/env bash
# The compat environment CI tests (.venv-torch20): xvhpc on torch 2.0.1 / torchvision 0.15.2,
# the pair Summit's newest Open-CE module ships, installed from PyPI on x86.
#
# envs/torch20-constraints.txt is the whole environment, every package pinned, installed
# --no-deps: nothing to resolve (pip's resolver spent minutes on numpy<2 here), and uv
# fetches and unpacks the ~2.6 GB in parallel (3.4 min cold on a busy 2-core machine; pip took
# 22). PyPI's torch 2.0.1 for Linux x86_64 is the CUDA 11.7 build: its .so files link the
# nvidia-* CUDA libraries, so `import torch` needs them even on CPU; the lock leaves out what a
# CPU import never loads: cusolver (CUDA linear algebra, ~360 MB) and triton (torch.compile
# only, unused by xvhpc). xvhpc goes in --no-deps: its pyproject pins the x86 torch pair.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-torch20}
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
py=$venv/bin/python
"$py" -m pip install -q --disable-pip-version-check uv
uv=("$venv/bin/uv" pip install --quiet --python "$py" --no-deps)
export UV_NATIVE_TLS=1 # the system's certificates, as pip uses them here
"${uv[@]}" --requirement envs/torch20-constraints.txt
"${uv[@]}" --editable .
"$py" - <<'PY'
import numpy
import torch
import torchvision

print(f"compat env: torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {numpy.__version__}")
PY
