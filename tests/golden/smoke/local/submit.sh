#!/bin/bash
# Submit "smoke" to local by hand (what `xvhpc submit` does, without its bookkeeping)
set -euo pipefail
cd /scratch/runs/smoke
bash scripts/ingest.sh
bash scripts/train.sh
bash scripts/evaluate.sh
bash scripts/report.sh
