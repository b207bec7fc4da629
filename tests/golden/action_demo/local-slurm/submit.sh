#!/bin/bash
# Submit "actions" to local-slurm by hand (what `xvhpc submit` does, without its bookkeeping)
set -euo pipefail
cd /scratch/runs/action_demo
job_ingest=$(sbatch --parsable scripts/ingest.sbatch)
job_ingest="${job_ingest%%;*}"
echo "ingest: ${job_ingest}"
job_merge=$(sbatch --parsable --kill-on-invalid-dep=yes "--dependency=afterok:${job_ingest}" scripts/merge.sbatch)
job_merge="${job_merge%%;*}"
echo "merge: ${job_merge}"
job_train=$(sbatch --parsable --kill-on-invalid-dep=yes "--dependency=afterok:${job_merge}" scripts/train.sbatch)
job_train="${job_train%%;*}"
echo "train: ${job_train}"
job_evaluate=$(sbatch --parsable --kill-on-invalid-dep=yes "--dependency=afterok:${job_train}" scripts/evaluate.sbatch)
job_evaluate="${job_evaluate%%;*}"
echo "evaluate: ${job_evaluate}"
job_report=$(sbatch --parsable --kill-on-invalid-dep=yes "--dependency=afterok:${job_evaluate}" scripts/report.sbatch)
job_report="${job_report%%;*}"
echo "report: ${job_report}"
