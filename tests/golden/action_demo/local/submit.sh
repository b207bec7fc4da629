#!/bin/bash
# Submit "actions" to local by hand (what `xvhpc submit` does, without its bookkeeping)
set -euo pipefail
cd /scratch/runs/action_demo
bash scripts/ingest.sh
bash scripts/train.sh
bash scripts/evaluate.sh
bash scripts/report.sh
