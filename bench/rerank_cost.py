"""Benchmark: what PMD re-ranking of the top K costs per query, against the ICL ranking.

On the demo model (``projects/videotoshop/configs/demo_vic_vim.yaml``: EfficientNet-Lite0
tokens, one cross layer 320 wide, 128 px images, 5 frames per clip; weights as built, since
the cost does not depend on their values) and synthetic inputs of the demo's shape (one
livestream gallery of --num_gallery images, --num_queries clips), times in one run:

1. ICL, per query: ``model.encode_video`` of the clip (batched) plus ``rank_queries`` against
   its gallery (the gallery is encoded once for all queries and is left out of both sides);
2. re-ranking of the top K (K = 10, 20 by default), per query: the ``PMDReranker`` of
   ``mmf.evaluation.rerank`` (top K by embedding score, K gallery token rows from the float16
   ``TokenStore`` on disk, ``model.pair_score`` of the K pairs) plus ``rerank_top``.

Each measurement is the best of --rounds rounds (the machine may be shared). Prints
milliseconds per query and the ratio re-rank / ICL for each K.

Usage: ``python bench/rerank_cost.py [--device cpu|cuda] [--ks 10 20] [--num_gallery 60]
[--num_queries 32] [--batch_size 8] [--rounds 3] [--threads N]``
"""
import argparse
import os
import sys
import tempfile
import time

import torch
from omegaconf import OmegaConf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmf.evaluation.encoding import Encoded, TokenStore  # noqa: E402
from mmf.evaluation.ranking import rank_queries  # noqa: E402
from mmf.evaluation.rerank import PMDReranker, rerank_top  # noqa: E402
from mmf.utils.build import build_model  # noqa: E402
from mmf.utils.configuration import component_layers, load_yaml, register_resolvers  # noqa: E402
from mmf.utils.env import setup_imports  # noqa: E402

CONFIG = "projects/videotoshop/configs/demo_vic_vim.yaml"
LIVE = "0b8e7a52-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
IMAGE_SIZE = 128
FRAMES = 5


def build_demo_model(device):
    register_resolvers()
    setup_imports()
    config = OmegaConf.merge(*component_layers("rice", ["videotoshop"]), load_yaml(CONFIG))
    node = OmegaConf.merge(config.model_config.rice, {"model": "rice"})
    OmegaConf.resolve(node)
    return build_model(node).to(device).eval()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _best(function, rounds, device):
    """(best seconds over ``rounds`` calls, the last call's result)."""
    best, result = float("inf"), None
    for _ in range(rounds):
        _sync(device)
        start = time.perf_counter()
        result = function()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


@torch.inference_mode()
def encode_gallery(model, images, batch_size, store):
    chunks = []
    for begin in range(0, len(images), batch_size):
        emb, tokens = model.encode_image(images[begin : begin + batch_size])
        chunks.append(emb.float().cpu())
        store.append(tokens)
    ids = [f"img{index:05d}" for index in range(len(images))]
    return Encoded(ids, [LIVE] * len(ids), torch.cat(chunks))


@torch.inference_mode()
def encode_clips(model, clips, batch_size):
    """[(emb [B,E], tokens [B,F,T,D], mask [B,F]), ...] per batch."""
    batches = []
    for begin in range(0, len(clips), batch_size):
        video = clips[begin : begin + batch_size]
        mask = torch.ones(video.shape[:2], dtype=torch.long, device=video.device)
        emb, tokens = model.encode_video(video, mask)
        batches.append((emb, tokens, mask))
    return batches


def icl_rank(batches, query_ids, gallery, topk, device):
    emb = torch.cat([b[0].float().cpu() for b in batches])
    return rank_queries(
        emb, query_ids, gallery.emb, gallery.ids, dict.fromkeys(query_ids, ["img00000"]),
        query_groups=[LIVE] * len(query_ids), gallery_groups=gallery.groups, topk=topk,
        device=device,
    )


def rerank(model, gallery, store, batches, query_ids, result, k, batch_size, device):
    reranker = PMDReranker(model, gallery, store, k, device)
    for number, (emb, tokens, mask) in enumerate(batches):
        ids = query_ids[number * batch_size : number * batch_size + len(emb)]
        reranker(ids, [LIVE] * len(ids), emb, tokens, mask)
    return rerank_top(result, reranker.candidates, reranker.scores, k)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--num_gallery", type=int, default=60)
    parser.add_argument("--num_queries", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8, help="clips per batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_demo_model(device)
    images = torch.randn(args.num_gallery, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    clips = torch.randn(args.num_queries, FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    query_ids = [f"{LIVE}-{1000 + i}-{2000 + i}" for i in range(args.num_queries)]
    num = args.num_queries
    with tempfile.TemporaryDirectory() as folder:
        store = TokenStore(folder, args.num_gallery)
        gallery = encode_gallery(model, images, args.batch_size, store)
        encode_clips(model, clips[: args.batch_size], args.batch_size)  # warm-up, not timed
        encode_time, batches = _best(
            lambda: encode_clips(model, clips, args.batch_size), args.rounds, device
        )
        rank_time, result = _best(
            lambda: icl_rank(batches, query_ids, gallery, max(args.ks), device), args.rounds,
            device,
        )
        icl = (encode_time + rank_time) / num
        tokens = batches[0][1]
        print(
            f"demo model ({CONFIG}): {IMAGE_SIZE} px, {FRAMES} frames, tokens "
            f"{tuple(tokens.shape[2:])} per frame; device {device}, torch threads "
            f"{torch.get_num_threads()}; {num} queries against a gallery of {args.num_gallery}"
        )
        print(
            f"ICL per query: {1000 * icl:.2f} ms (clip encoding {1000 * encode_time / num:.2f} "
            f"ms + ranking {1000 * rank_time / num:.3f} ms)"
        )
        for k in args.ks:
            seconds, _ = _best(
                lambda k=k: rerank(model, gallery, store, batches, query_ids, result, k,
                                   args.batch_size, device),
                args.rounds, device,
            )
            per_query = seconds / num
            print(
                f"re-rank top {k}: {1000 * per_query:.2f} ms per query = "
                f"{per_query / icl:.2f}x the ICL time per query "
                f"(ICL + re-rank: {(icl + per_query) / icl:.2f}x)"
            )
        store.close()


if __name__ == "__main__":
    main()
