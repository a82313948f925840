"""Splitting the encoding of an evaluation across the ranks of a process group (torchrun).

Each rank encodes a contiguous shard of whole batches of the gallery list and of the query
list (``shard``), so every batch is the one a single process encodes: embeddings, PMD
candidates and PMD scores are those of one process (bit for bit on a deterministic device).
``gather_encoded`` concatenates the ranks' ``Encoded`` in rank order, which is dataset order,
and ``gather_rerank_scores`` merges the re-ranking scores. Each rank re-ranks the queries it
encodes, while their tokens are at hand; since a query's top K may be any image of its
gallery, ``share_tokens`` gives every rank the whole gallery token store (each rank then
holds on its disk what one process holds: 5 GB for LPR4M's 66,358 test images at ViT-B/32).
In one process every function returns its input.
"""
import math

import numpy as np
import torch
import torch.distributed as dist

from mmf.evaluation.encoding import Encoded, TokenStore
from mmf.utils.distributed import all_gather_object, collective_device, get_rank, get_world_size

TOKEN_ROWS_PER_BROADCAST = 256


def shard_rows(length, batch_size, rank, world_size):
    """Rows of rank ``rank`` of ``world_size``: consecutive whole batches of ``batch_size``
    (of n batches, rank r gets [r*n//W, (r+1)*n//W)); the ranks' ranges, in rank order, are
    ``range(length)``."""
    num_batches = math.ceil(length / batch_size)
    first = rank * num_batches // world_size * batch_size
    last = min((rank + 1) * num_batches // world_size * batch_size, length)
    return range(first, last)


def shard(dataset, batch_size):
    """This rank's ``shard_rows`` of ``dataset`` as a ``Subset`` (a ``Subset`` is re-indexed
    into its own dataset); ``dataset`` itself in one process."""
    world_size = get_world_size()
    if world_size == 1:
        return dataset
    rows = shard_rows(len(dataset), batch_size, get_rank(), world_size)
    if isinstance(dataset, torch.utils.data.Subset):
        return torch.utils.data.Subset(dataset.dataset, dataset.indices[rows.start : rows.stop])
    return torch.utils.data.Subset(dataset, rows)


def gather_encoded(part):
    """Every rank's ``Encoded`` concatenated in rank order, on every rank (a collective)."""
    if get_world_size() == 1:
        return part
    parts = [p for p in all_gather_object(part) if p.ids]
    if not parts:
        return part
    return Encoded(
        [i for p in parts for i in p.ids],
        [g for p in parts for g in p.groups],
        torch.cat([p.emb for p in parts]),
    )


def gather_rerank_scores(reranker):
    """Merge every rank's ``PMDReranker`` candidates and scores into ``reranker`` (a
    collective; query ids are unique, so no rank's entries overwrite another's)."""
    if get_world_size() == 1:
        return
    for candidates, scores in all_gather_object((reranker.candidates, reranker.scores)):
        reranker.candidates.update(candidates)
        reranker.scores.update(scores)


def share_tokens(store, folder):
    """A ``TokenStore`` under ``folder`` holding every rank's gallery tokens in rank order
    (the rows of ``gather_encoded``'s gallery), on every rank; ``store`` (this rank's) is
    closed. Each rank broadcasts its rows in chunks of ``TOKEN_ROWS_PER_BROADCAST``."""
    if get_world_size() == 1:
        return store
    try:
        shape = None if store.array is None else tuple(store.array.shape[1:])
        layouts = all_gather_object((store.size, shape))
        shared = TokenStore(folder, sum(size for size, _ in layouts))
        try:
            token_shape = next((s for _, s in layouts if s is not None), None)
            for source, (size, _) in enumerate(layouts):
                _receive(store, shared, source, size, token_shape)
        except BaseException:
            shared.close()
            raise
    finally:
        store.close()
    return shared


def _receive(store, shared, source, size, token_shape):
    """Append rank ``source``'s ``size`` rows to ``shared``: [rows, T, D] float16 chunks."""
    device = collective_device()
    for start in range(0, size, TOKEN_ROWS_PER_BROADCAST):
        rows = min(TOKEN_ROWS_PER_BROADCAST, size - start)
        if get_rank() == source:
            chunk = store.get(np.arange(start, start + rows)).to(device)
        else:
            chunk = torch.empty((rows, *token_shape), dtype=torch.float16, device=device)
        dist.broadcast(chunk, src=source)
        shared.append(chunk)
