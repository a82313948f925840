"""Benchmark: rank the LPR4M-sized test set from cached embeddings.

Synthetic unit-norm embeddings (d=512) for 20,079 queries and 66,358 gallery images split
over 110 livestream galleries; some queries have several ground-truth images. Times, in one
run:

1. ``mmf.evaluation.ranking.rank_queries`` + metrics (one matrix product per livestream or
   batch of small ones, ranks and top-k lists from whole-tensor operations);
2. the bare matrix products ``queries_l @ gallery_l.T`` of every livestream ``l`` (embeddings
   grouped beforehand), the floor of any exact ranking; the ratio of 1. to 2. is printed;
3. the original's per-query approach, in memory: for each query a dot product with its
   livestream gallery, a Python sort of ``(id, score)`` pairs and ``calculate_acc``'s top-10
   hit counting. The original also writes and re-reads one JSON file per query; that part is
   timed on ``--json_sample`` queries and extrapolated to all of them (stated in the output).

1. and 2. are each the best of ``--repeat`` runs (load from other jobs only slows a run down).

Usage: ``python bench/ranking.py [--device cpu|cuda] [--threads N] [--repeat 3]``
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmf.evaluation.metrics import summarize  # noqa: E402
from mmf.evaluation.ranking import rank_queries  # noqa: E402

NUM_QUERIES = 20079
NUM_GALLERY = 66358
NUM_LIVES = 110
DIM = 512


def make_data(seed=0):
    generator = torch.Generator().manual_seed(seed)
    weights = torch.rand(NUM_LIVES, generator=generator) + 0.5
    sizes = (weights / weights.sum() * NUM_GALLERY).long()
    sizes[-1] += NUM_GALLERY - sizes.sum()
    live_ids = [f"live{index:03d}" for index in range(NUM_LIVES)]
    gallery_groups = [
        live for live, size in zip(live_ids, sizes.tolist(), strict=True) for _ in range(size)
    ]
    gallery_ids = [f"img{index:06d}" for index in range(NUM_GALLERY)]
    gallery = torch.randn(NUM_GALLERY, DIM, generator=generator)
    gallery = torch.nn.functional.normalize(gallery, dim=1)

    starts = torch.cumsum(sizes, 0) - sizes
    query_live = torch.randint(0, NUM_LIVES, (NUM_QUERIES,), generator=generator)
    ground_truth, query_ids, query_groups = {}, [], []
    anchors = []
    for index, live in enumerate(query_live.tolist()):
        count = 1 + int(torch.rand(1, generator=generator) < 0.2)
        picks = starts[live] + torch.randint(0, int(sizes[live]), (count,), generator=generator)
        query_id = f"{live_ids[live]}-{index}"
        ground_truth[query_id] = [gallery_ids[p] for p in picks.tolist()]
        query_ids.append(query_id)
        query_groups.append(live_ids[live])
        anchors.append(int(picks[0]))
    noise = torch.randn(NUM_QUERIES, DIM, generator=generator)
    queries = torch.nn.functional.normalize(gallery[anchors] * 3 + noise, dim=1)
    return queries, query_ids, query_groups, gallery, gallery_ids, gallery_groups, ground_truth


def original_per_query(queries, query_ids, query_groups, gallery, gallery_ids, gallery_groups, gt):
    """The original's loop, in memory: per query dot, Python sort, top-10 hit counting."""
    galleries = {}
    for row, group in enumerate(gallery_groups):
        galleries.setdefault(group, []).append(row)
    galleries = {
        group: ([gallery_ids[r] for r in rows], gallery[rows]) for group, rows in galleries.items()
    }
    predictions = {}
    for row, query_id in enumerate(query_ids):
        names, embeddings = galleries[query_groups[row]]
        scores = (queries[row : row + 1] @ embeddings.T)[0].tolist()
        ranked = zip(names, scores, strict=True)
        predictions[query_id] = sorted(ranked, key=lambda pair: pair[1], reverse=True)
    thresholds = (1, 3, 5, 10)
    hits = dict.fromkeys(thresholds, 0)
    for query_id, ranked in predictions.items():
        for k in range(10):
            name = ranked[min(k, len(ranked) - 1)][0]
            if name in gt[query_id]:
                for threshold in thresholds:
                    if k < threshold:
                        hits[threshold] += 1
                break
    return {f"r@{k}": 100.0 * hits[k] / len(gt) for k in thresholds}, predictions


def bare_matmul_seconds(queries, query_groups, gallery, gallery_groups):
    """Seconds of the score matrix products alone, one per livestream."""
    rows, query_rows = {}, {}
    for row, group in enumerate(gallery_groups):
        rows.setdefault(group, []).append(row)
    for row, group in enumerate(query_groups):
        query_rows.setdefault(group, []).append(row)
    pairs = [(queries[query_rows[g]], gallery[rows[g]]) for g in query_rows]
    start = time.perf_counter()
    for group_queries, group_gallery in pairs:
        group_queries @ group_gallery.T
    return time.perf_counter() - start


def time_json_files(predictions, sample):
    """Seconds to write and re-read ``sample`` per-query JSON files (as the original does)."""
    items = list(predictions.items())[:sample]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        for query_id, ranked in items:
            with open(os.path.join(folder, f"q2g_simmat_{query_id}.json"), "w") as handle:
                json.dump({query_id: ranked}, handle)
        merged = {}
        for name in os.listdir(folder):
            with open(os.path.join(folder, name)) as handle:
                merged.update(json.load(handle))
        return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json_sample", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = make_data()
    queries, query_ids, query_groups, gallery, gallery_ids, gallery_groups, gt = data
    print(
        f"{len(query_ids)} queries, {len(gallery_ids)} gallery images in {NUM_LIVES} "
        f"livestreams, d={DIM}, torch threads={torch.get_num_threads()}, device={args.device}"
    )
    if args.device.startswith("cuda"):
        rank_queries(queries[:64], query_ids[:64], gallery, gallery_ids,
                     {q: gt[q] for q in query_ids[:64]}, query_groups[:64], gallery_groups,
                     device=args.device)
        torch.cuda.synchronize()
    fast = math.inf
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = rank_queries(
            queries, query_ids, gallery, gallery_ids, gt, query_groups, gallery_groups,
            topk=10, device=args.device,
        )
        metrics = summarize(result)
        fast = min(fast, time.perf_counter() - start)
    print(f"vectorised: {fast:.3f} s (best of {args.repeat})  " + _fmt(metrics))
    bare = min(
        bare_matmul_seconds(queries, query_groups, gallery, gallery_groups)
        for _ in range(args.repeat)
    )
    print(f"bare per-livestream matmul: {bare:.3f} s; ranking with metrics / matmul: "
          f"{fast / bare:.2f}")

    start = time.perf_counter()
    reference, predictions = original_per_query(
        queries, query_ids, query_groups, gallery, gallery_ids, gallery_groups, gt
    )
    slow = time.perf_counter() - start
    print(f"original per-query loop (in memory): {slow:.3f} s  " + _fmt(reference))
    sample = min(args.json_sample, len(predictions))
    json_seconds = time_json_files(predictions, sample) * len(predictions) / sample
    print(
        f"original per-query JSON write+read: {json_seconds:.2f} s "
        f"(timed on {sample} files, extrapolated to {len(predictions)})"
    )
    for k in (1, 3, 5, 10):
        if abs(reference[f"r@{k}"] - metrics[f"r@{k}"]) > 1e-9:
            raise SystemExit(f"mismatch at r@{k}: {reference[f'r@{k}']} vs {metrics[f'r@{k}']}")
    print(
        f"speedup: {slow / fast:.1f}x (in memory), {(slow + json_seconds) / fast:.1f}x "
        f"(with the original's JSON files); R@1/3/5/10 agree"
    )
    print("target (<= 0.25 s):", "met" if fast <= 0.25 else "NOT met")


def _fmt(metrics):
    text = " ".join(
        f"{key}={metrics[key]:.2f}" for key in ("r@1", "r@3", "r@5", "r@10") if key in metrics
    )
    if "map" in metrics:
        text += f" map={metrics['map']:.2f} median_rank={metrics['median_rank']}"
    return text


if __name__ == "__main__":
    main()
