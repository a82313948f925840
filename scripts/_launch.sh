#!/usr/bin/env bash
# Shared launcher of training_lpr.sh and training_movingfashion.sh: _launch.sh CONFIG DATASET [overrides...]
set -euo pipefail
CONFIG=$1
DATASET=$2
shift 2
PYTHON=${PYTHON:-python}
LAUNCHER=${LAUNCHER:-torchrun}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
if [ -z "${NPROC_PER_NODE:-}" ]; then
  NPROC_PER_NODE=$("$PYTHON" -c "import torch; print(max(torch.cuda.device_count(), 1))")
fi
RUN_ARGS=(mmf_cli/run.py "config=${CONFIG}" model=rice "dataset=${DATASET}" "$@")
case "$LAUNCHER" in
  torchrun)
    exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
      --nproc_per_node="$NPROC_PER_NODE" --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
      "${RUN_ARGS[@]}"
    ;;
  launch)
    # Deprecated launcher of the original scripts; it passes --local-rank=N, which run.py accepts.
    exec "$PYTHON" -m torch.distributed.launch --nnodes="$NNODES" --node_rank="$NODE_RANK" \
      --nproc_per_node="$NPROC_PER_NODE" --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
      "${RUN_ARGS[@]}"
    ;;
  debug)
    exec "$PYTHON" "${RUN_ARGS[@]}" training.num_workers=0
    ;;
  *)
    echo "LAUNCHER must be torchrun, launch or debug, got '$LAUNCHER'" >&2
    exit 1
    ;;
esac
