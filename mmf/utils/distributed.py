"""Process-group helpers for torchrun / ``torch.distributed.launch`` on CPU (gloo) or GPU (nccl).

Every helper works unchanged in a single process: ranks are 0, world size is 1 and the
collectives return their input.
"""
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mmf.common.errors import MMFError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process sits in the job, read from torchrun's environment variables."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self):
        return self.world_size > 1


def env_from_environ(environ=None):
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by torchrun and
    ``torch.distributed.launch``)."""
    environ = os.environ if environ is None else environ
    try:
        return DistributedEnv(
            rank=int(environ.get("RANK", 0)),
            world_size=int(environ.get("WORLD_SIZE", 1)),
            local_rank=int(environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as err:
        raise ValueError(f"malformed torchrun environment variable: {err}") from None


def init_distributed(backend=None, timeout_s=1800, environ=None):
    """Join the process group described by the environment, if there is more than one process.

    ``backend`` defaults to nccl when CUDA is available and gloo otherwise. Returns the
    ``DistributedEnv``; a single process returns ``DistributedEnv()`` and joins nothing.
    """
    import datetime

    env = env_from_environ(environ)
    if not env.is_distributed or dist.is_initialized():
        return env
    if backend is None or (backend == "nccl" and not torch.cuda.is_available()):
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    logger.info(
        "joined process group: rank %d of %d (local rank %d, backend %s)",
        env.rank,
        env.world_size,
        env.local_rank,
        backend,
    )
    return env


def is_dist_initialized():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist_initialized() else 0


def get_world_size():
    return dist.get_world_size() if is_dist_initialized() else 1


def is_main():
    return get_rank() == 0


def synchronize():
    if get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj, src=0):
    if get_world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def gather_tensor_along_batch(tensor):
    """All-gather without gradient, concatenated along dim 0 in rank order: [W*B, ...]."""
    world_size = get_world_size()
    if world_size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, 0)


def gather_tensor_along_batch_with_backward(tensor):
    """All-gather with gradient (``torch.distributed.nn``), concatenated along dim 0: [W*B, ...].

    The backward pass sums the gradients of all ranks for each rank's slice, like MMF's
    ``GatherLayer``.
    """
    if get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), 0)


def all_gather_object(obj):
    """List of ``obj`` from every rank, in rank order."""
    world_size = get_world_size()
    if world_size == 1:
        return [obj]
    out = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


class RankFailedError(MMFError):
    """Another rank of the job failed (its message names the rank and its error)."""


def raise_together(step):
    """Run ``step()`` on this rank; a collective (every rank must call it) after which every
    rank raises if ``step`` raised on any, so no rank waits in a later collective for one that
    has failed.

    The failing rank raises its own exception; the others raise ``RankFailedError`` naming
    the lowest failing rank and its error in one line. Returns ``step()``'s result (this
    rank's; nothing is exchanged but the errors). In one process it is ``step()``.
    """
    if get_world_size() == 1:
        return step()
    try:
        result, error = step(), None
    except Exception as err:  # shared with the other ranks, then raised again below
        result, error = None, err
    messages = all_gather_object(None if error is None else _one_line(error))
    if error is not None:
        raise error
    for rank, message in enumerate(messages):
        if message is not None:
            raise RankFailedError(f"rank {rank}: {message}")
    return result


def _one_line(error):
    text = str(error) if isinstance(error, MMFError) else f"{type(error).__name__}: {error}"
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def collective_device():
    """Where tensors of a collective must be: this rank's GPU under nccl, else the CPU."""
    if is_dist_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
