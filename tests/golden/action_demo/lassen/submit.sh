#!/bin/bash
# Submit "actions" to lassen by hand (what `xvhpc submit` does, without its bookkeeping)
set -euo pipefail
cd /scratch/runs/action_demo
job_ingest=$(bsub < scripts/ingest.lsf | sed -n 's/^Job <\([0-9]*\)>.*/\1/p')
echo "ingest: ${job_ingest}"
job_train=$(bsub -w "done(${job_ingest})" -ti < scripts/train.lsf | sed -n 's/^Job <\([0-9]*\)>.*/\1/p')
echo "train: ${job_train}"
job_evaluate=$(bsub -w "done(${job_train})" -ti < scripts/evaluate.lsf | sed -n 's/^Job <\([0-9]*\)>.*/\1/p')
echo "evaluate: ${job_evaluate}"
job_report=$(bsub -w "done(${job_evaluate})" -ti < scripts/report.lsf | sed -n 's/^Job <\([0-9]*\)>.*/\1/p')
echo "report: ${job_report}"
