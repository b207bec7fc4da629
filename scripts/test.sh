#!/usr/bin/env bash
# The test suite: lint, types, then pytest (real Slurm tests need `bash scripts/slurm.sh` first).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check xvhpc tests benchmarks scripts
.venv/bin/ruff format --check xvhpc tests benchmarks scripts
.venv/bin/mypy xvhpc  # the whole package; the login side strictly (pyproject.toml)
exec .venv/bin/python -m pytest -ra --durations=15 "$@"
