#!/usr/bin/env bash
# An xvhpc environment on a POWER9 (ppc64le) site from Open-CE, and the site's `env:` for it.
# Run it on a login node (pip needs the internet), through a site wrapper:
#   bash envs/summit-opence.sh       PREFIX   # OLCF Summit: clone the open-ce module's env
#   bash envs/power9-slurm-opence.sh PREFIX   # other POWER9: create from the Open-CE channel
# PREFIX: a writable directory that compute nodes can read (Summit: under /ccs/proj/<project>).
# It ends by printing the `env:` block to paste into the site config (absolute env.python).
#
# Why each step (OLCF user guide, olcf/olcf-user-docs software/analytics/ibm-wml-ce.rst):
# - `module load open-ce/<version>` activates a conda env of ML frameworks; load a specific
#   version ("recommended to future-proof scripts"). open-ce/1.10.0 (py39 and py311 builds)
#   ships PyTorch 2.0.1, the newest on Summit.
# - "The Open-CE conda environments are read-only": `conda create --clone` it, then add
#   packages to the clone; to activate the clone, "still load the module first".
# - PyPI has no ppc64le torch wheels: nothing below may let pip resolve torch. grad-cam
#   (requires torch) and xvhpc go in with --no-deps, everything else under a constraints file
#   that pins the env's own torch, torchvision and numpy (torch 2.0.1 needs numpy 1.x).
# - Lmod and `conda activate` read unset variables (conda/conda#8186, #3200): they run between
#   `set +u` and `set -u`, here and in the printed env.setup (job scripts use set -euo pipefail).
set -euo pipefail
mode=${1:?usage: opence.sh clone|channel PREFIX}
prefix=${2:?usage: opence.sh clone|channel PREFIX (a writable directory compute nodes can read)}
modules=${OPENCE_MODULES:?the modules to load, e.g. open-ce/1.10.0-py311-ibm}
here=$(cd "$(dirname "$0")/.." && pwd)
[[ $prefix == /* ]] || prefix=$PWD/$prefix

set +u
# shellcheck disable=SC2086  # several module names, split on purpose
module load $modules
if [[ ! -d $prefix ]]; then
  if [[ $mode == clone ]]; then
    conda create --yes --prefix "$prefix" --clone "$CONDA_DEFAULT_ENV"
  else
    conda create --yes --prefix "$prefix" --channel "${OPENCE_CHANNEL:?the Open-CE conda channel}" \
      python=3.11 pytorch=2.0.1 torchvision=0.15.2 h5py matplotlib scikit-learn scipy opencv
  fi
fi
conda activate "$prefix"
set -u
py=$prefix/bin/python

# What the env lacks: compiled packages from conda (no ppc64le wheels on PyPI for several),
# pure-Python ones from pip. The env's torch/torchvision/numpy are pinned for pip.
missing() { # MODULE=PACKAGE ... → the PACKAGEs whose MODULE does not import
  for pair in "$@"; do "$py" -c "import ${pair%%=*}" 2>/dev/null || echo "${pair#*=}"; done
}
mapfile -t from_conda < <(missing h5py=h5py matplotlib=matplotlib sklearn=scikit-learn \
  scipy=scipy cv2=opencv yaml=pyyaml)
if ((${#from_conda[@]})); then
  set +u
  conda install --yes --prefix "$prefix" --freeze-installed "${from_conda[@]}"
  set -u
fi
pins=$prefix/xvhpc-pins.txt
"$py" - >"$pins" <<'PY'
from importlib.metadata import version

for name in ("torch", "torchvision", "numpy"):
    print(f"{name}=={version(name)}")
PY
mapfile -t from_pip < <(missing pydantic='pydantic>=2.6' submitit='submitit>=1.5' \
  pydicom='pydicom>=3.0' PIL='pillow>=10' tqdm='tqdm>=4.66' fastapi='fastapi>=0.110' \
  uvicorn='uvicorn>=0.29' multipart='python-multipart>=0.0.9' ttach=ttach optuna='optuna>=3.5')
if ((${#from_pip[@]})); then
  "$py" -m pip install --constraint "$pins" "${from_pip[@]}"
fi
"$py" -m pip install --no-deps 'grad-cam>=1.5' "$here"
# mpi4py built against the site's MPI (Spectrum MPI on Summit), never a wheel: jsrun steps share
# rank 0's address and split ingest through it (OLCF, "Installing mpi4py and h5py")
if [[ -n $(missing mpi4py=mpi4py) ]]; then
  MPICC="mpicc -shared" "$py" -m pip install --no-cache-dir --no-binary=mpi4py mpi4py
fi

"$py" - <<'PY'
import optuna  # noqa: F401  (sweeps with method: tpe ask it on the compute node)
import torch
from mpi4py import MPI  # noqa: F401  (jsrun steps need it: xvhpc/runtime/whoami.py)

import xvhpc.serve.app  # noqa: F401  (every compute-side module imports)
import xvhpc.pipeline.evaluate  # noqa: F401
import xvhpc.pipeline.ingest  # noqa: F401
import xvhpc.pipeline.report  # noqa: F401
import xvhpc.pipeline.train  # noqa: F401
from xvhpc.runtime.compat import MIN_TORCH, below_minimum

if below_minimum(torch.__version__):
    raise SystemExit(f"torch {torch.__version__} here; xvhpc needs {MIN_TORCH} or newer")
PY
torch_version=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])')
cat <<EOF
# env: for the site config (site_configs/*.yaml), made by envs/opence.sh $mode
env:
  modules: [$(echo $modules | sed 's/ /, /g')]   # xvhpc loads them under set +u
  setup:
    - conda activate $prefix
  python: $py
  torch: "$torch_version"
EOF
