#!/usr/bin/env bash
# The compat environment CI tests (.venv-torch20): xvhpc on torch 2.0.1 / torchvision 0.15.2,
# the pair Summit's newest Open-CE module ships, installed from PyPI on x86.
#
# PyPI's torch 2.0.1 for Linux x86_64 is the CUDA 11.7 build: its .so files link the nvidia-*
# CUDA libraries, so `import torch` needs them even on CPU. They are installed --no-deps at
# torch's exact pins, leaving out what a CPU import never loads: cusolver (CUDA linear
# algebra, ~360 MB) and triton (torch.compile only, which xvhpc does not use; it drags cmake).
# xvhpc itself goes in --no-deps (its pyproject pins the x86 pair) with its other
# dependencies read from pyproject.toml, all under envs/torch20-constraints.txt (numpy<2).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-torch20}
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
py=$venv/bin/python
# --no-warn-conflicts: torch 2.0.1 names triton and cusolver, left out on purpose
install=("$py" -m pip install -q --disable-pip-version-check --no-warn-conflicts
  -c envs/torch20-constraints.txt)

# versions: all from envs/torch20-constraints.txt
"${install[@]}" --no-deps torch torchvision nvidia-cuda-runtime-cu11 nvidia-cuda-nvrtc-cu11 \
  nvidia-cuda-cupti-cu11 nvidia-cudnn-cu11 nvidia-cublas-cu11 nvidia-cufft-cu11 \
  nvidia-curand-cu11 nvidia-cusparse-cu11 nvidia-nccl-cu11 nvidia-nvtx-cu11

# torch's own CPU dependencies, xvhpc's (from pyproject.toml, less the torch pair and grad-cam,
# whose requirement on torch would pull the CUDA set again), grad-cam's, and the test tools.
mapfile -t deps < <("$py" - <<'PY'
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
skip = {"torch", "torchvision", "grad-cam"}
for req in project["dependencies"]:
    if re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower() not in skip:
        print(req)
PY
)
"${install[@]}" filelock typing-extensions sympy networkx jinja2 requests "${deps[@]}" \
  ttach opencv-python-headless scikit-learn scipy \
  pytest pytest-timeout httpx onnx onnxruntime
"${install[@]}" --no-deps grad-cam
"${install[@]}" --no-deps -e .
"$py" - <<'PY'
import numpy
import torch
import torchvision

print(f"compat env: torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {numpy.__version__}")
PY
