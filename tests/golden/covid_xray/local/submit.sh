#!/bin/bash
# Submit "covid-xray" to local by hand (what `xvhpc submit` does, without its bookkeeping)
set -euo pipefail
cd /scratch/runs/covid_xray
bash scripts/ingest.sh
bash scripts/train.sh
bash scripts/evaluate.sh
bash scripts/report.sh
