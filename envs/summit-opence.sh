#!/usr/bin/env bash
# OLCF Summit: clone the open-ce/1.10.0 module's env (torch 2.0.1 / torchvision 0.15.2, Python
# 3.11), add what xvhpc needs, print the env: for site_configs/summit.yaml. See envs/opence.sh.
#   bash envs/summit-opence.sh /ccs/proj/<project>/<user>/xvhpc-opence
set -euo pipefail
export OPENCE_MODULES=${OPENCE_MODULES:-open-ce/1.10.0-py311-ibm}
exec bash "$(dirname "$0")/opence.sh" clone "$@"
