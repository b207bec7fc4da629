#!/usr/bin/env bash
# A POWER9 Slurm site without an Open-CE module (site_configs/power9-slurm.yaml): create the env
# from the Open-CE 1.10 conda channel (torch 2.0.1 / torchvision 0.15.2, CUDA 11.8) with the
# site's anaconda module, add what xvhpc needs, print the env:. See envs/opence.sh.
#   OPENCE_CHANNEL=<the Open-CE 1.10.0 channel URL or a local mirror> \
#     bash envs/power9-slurm-opence.sh /path/on/shared/storage/xvhpc-opence
set -euo pipefail
export OPENCE_MODULES=${OPENCE_MODULES:-anaconda3 cuda/11.8}
exec bash "$(dirname "$0")/opence.sh" channel "$@"
