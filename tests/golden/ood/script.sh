#!/usr/bin/env bash
# host, port, password and root_path come from before.sh (OnDemand sources it first)
# shellcheck disable=SC2154
# Started by OnDemand on the compute node: the xvhpc dashboard behind OnDemand's reverse proxy
# (/node/<host>/<port>/ keeps its prefix in the path: --root-path). Form values are quoted by
# Shellwords.escape: they reach xvhpc as single arguments, never as shell code.
set -euo pipefail

XVHPC_MODULE=''
RUNS_DIR=/home/rao/runs
DATA_ROOT=''

if [[ -n "${XVHPC_MODULE}" ]]; then
  module load "${XVHPC_MODULE}"
fi
RUNS_DIR="${RUNS_DIR:-${HOME}/runs}"
RUNS_DIR="${RUNS_DIR/#\~/${HOME}}"
DATA_ROOT="${DATA_ROOT/#\~/${HOME}}"
mkdir -p -- "${RUNS_DIR}"

# a value starting with '-' stays a folder: --data-root=VALUE, and the runs folder after --
args=(--host "${host}" --port "${port}" --root-path "${root_path}")
if [[ -n "${DATA_ROOT}" ]]; then
  args+=("--data-root=${DATA_ROOT}")
fi
args+=(-- "${RUNS_DIR}")
export XVHPC_UI_TOKEN="${password}"
exec xvhpc ui "${args[@]}"
