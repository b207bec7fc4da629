#!/usr/bin/env bash
# Create .venv and install xvhpc into it (editable). --test adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extras=""
[[ ${1:-} == --test ]] && extras="[test]"
.venv/bin/python -m pip install -q -e ".${extras}"
.venv/bin/xvhpc --version
