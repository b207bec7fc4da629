#!/usr/bin/env bash
# The test suite: lint, types, the docs build, then pytest (real Slurm tests need `bash scripts/slurm.sh` first).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check xvhpc tests benchmarks scripts
.venv/bin/ruff format --check xvhpc tests benchmarks scripts
.venv/bin/mypy xvhpc  # the whole package; the login side strictly (pyproject.toml)
# the documentation site (reference pages generated from the code by scripts/gen_docs.py)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
# two workers (XVHPC_TEST_WORKERS=0: one process); the tests of real schedulers, launchers and
# containers (tests/e2e) take turns under a lock (tests/conftest.py), never two at once
exec .venv/bin/python -m pytest -ra --durations=25 -n "${XVHPC_TEST_WORKERS:-2}" "$@"
