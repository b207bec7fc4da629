#!/bin/bash
# Submit "covid-xray-sweep" to local by hand (what `xvhpc submit` does, without its bookkeeping)
set -euo pipefail
cd /scratch/runs/covid_sweep
bash scripts/ingest.sh
bash scripts/train.sh
bash scripts/evaluate.sh
bash scripts/report.sh
