#!/usr/bin/env bash
# Install, make a small synthetic X-ray dataset, and run the whole pipeline on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/xvhpc ]] || bash scripts/install.sh
.venv/bin/xvhpc demo-data demo-data --per-class 40 --size 256
.venv/bin/xvhpc run jobs/demo.yaml --out runs/demo
