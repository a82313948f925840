#!/usr/bin/env bash
# GPU check (bench/gpu_check.py): RICE training clips/s against the backbone, GPU against CPU
# JPEG decode, evaluation images/s and a 2-update NCCL run through torchrun, in under 5
# minutes on a CUDA machine. Without CUDA it stops with one line.
#   bash bench/gpu_check.sh                     # on the GPU machine
#   bash bench/gpu_check.sh --device cpu --tiny # rehearsal on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1
exec timeout 300 "$PY" bench/gpu_check.py "$@"
