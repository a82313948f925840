#!/usr/bin/env bash
# Train RICE on MovingFashion (dataset "movingfashion").
#
#   VARIANT=vic_vim_rec bash scripts/training_movingfashion.sh            # single node, all GPUs
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash scripts/training_movingfashion.sh   # on node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash scripts/training_movingfashion.sh   # on node 1
#   LAUNCHER=launch bash scripts/training_movingfashion.sh   # the original's python -m torch.distributed.launch
#   LAUNCHER=debug  bash scripts/training_movingfashion.sh   # one process, no process group
#
# Environment: VARIANT (vic | vic_vim | vic_vim_rec), NPROC_PER_NODE (GPUs per node, default:
# all visible GPUs), NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, MMF_DATA_DIR (dataset root
# holding movingfashion/), MMF_SAVE_DIR (default save). Extra arguments are passed to mmf_cli/run.py
# as config overrides, e.g. training.batch_size=128.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${VARIANT:-vic_vim_rec}
DATASET=movingfashion
PROJECT=movingfashion
exec bash scripts/_launch.sh "projects/${PROJECT}/configs/e2e_pretraining_${VARIANT}.yaml" "${DATASET}" "$@"
