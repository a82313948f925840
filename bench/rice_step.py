"""Benchmark: CPU training-step time of RICE with vic, vic_vim and vic_vim_rec (PMD in the
original image direction, and in both directions: vic_vim2, vic_vim2_rec), against the backbone
alone, on the same backbone and batch.

One run builds one RICE model with every head (a CLIP-shaped ``openai_clip`` ViT, random
init) and times, on one random batch of B images and B clips of F frames:

1. backbone: encoder forward on the images and the B*F frames + backward of a loss on both
   outputs (no head);
2. vic / vic_vim / vic_vim_rec / vic_vim2 / vic_vim2_rec: the same encoder passes + the
   head's ``training_losses`` with those tasks (what ``model(batch)`` runs in train mode),
   backward of the summed losses; ``vim2`` is PMD with ``pmd_directions: [image, video]``.
An AdamW step follows each backward (every mode).

Modes alternate for ``--rounds`` rounds after one warm-up round; the best time of each is
kept. Times are process CPU seconds with one intra-op thread by default (``--threads 1``;
CPU autograd runs in the calling thread), which other load on a shared machine barely
changes; ``--wall`` times wall-clock seconds instead. It also times ``mine_negatives`` (the
PMD hard-negative mining) on the batch's embeddings and reports its share of the vic_vim step.

FLOPs of one forward+backward of each mode are counted with ``torch.utils.flop_counter``
(math SDPA, so attention matmuls count). The extra time of each head, e.g. PMD + PFR
t(vic_vim_rec) - t(vic), is compared with what its extra FLOPs predict at the backbone's
measured FLOP rate: target ratio measured / predicted within 0.8-1.2.

Defaults (width 256, 4 layers, 224 px / patch 32 = 50 tokens, B=4, F=4) keep the run under
about 2 minutes on 2 cores; ``--full`` uses ViT-B/32 (width 768, 12 layers).

Usage: ``python bench/rice_step.py [--batch 4] [--frames 4] [--rounds 7] [--chunk 2] [--full]
[--threads 1] [--wall]``
"""
import argparse
import os
import sys
import time

import torch
from omegaconf import OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmf.utils.build import build_model  # noqa: E402
from mmf.utils.configuration import get_mmf_root, load_yaml  # noqa: E402
from mmf.utils.env import setup_imports  # noqa: E402

IMAGE, BOTH = ("image",), ("image", "video")
# mode -> (tasks, pmd_directions)
MODES = {
    "vic": (("vic",), IMAGE),
    "vic_vim": (("vic", "vim"), IMAGE),
    "vic_vim_rec": (("vic", "vim", "rec"), IMAGE),
    "vic_vim2": (("vic", "vim"), BOTH),
    "vic_vim2_rec": (("vic", "vim", "rec"), BOTH),
}
# head -> (mode, tasks without vic, pmd_directions)
HEADS = {
    "pmd": ("vic_vim", ("vim",), IMAGE),
    "pmd+pfr": ("vic_vim_rec", ("vim", "rec"), IMAGE),
    "pmd2": ("vic_vim2", ("vim",), BOTH),
    "pmd2+pfr": ("vic_vim2_rec", ("vim", "rec"), BOTH),
}


def build(args):
    setup_imports()
    defaults = get_mmf_root() / "configs" / "models" / "rice" / "defaults.yaml"
    base = load_yaml(defaults).model_config.rice
    encoder = {"image_size": 224, "patch_size": 32}
    if not args.full:
        encoder.update(width=256, layers=4, heads=4, output_dim=256)
    config = OmegaConf.merge(
        base,
        {
            "model": "rice",
            "tasks": ["vic", "vim", "rec"],
            "tasks_sample_ratio": [0.6, 0.2, 0.2],
            "image_encoder": {"type": "openai_clip", "params": encoder},
            "pmd_chunk_size": args.chunk,
            "pmd_directions": list(BOTH),
        },
    )
    torch.manual_seed(0)
    return build_model(config).train()


def make_batch(batch, frames):
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, frames, dtype=torch.long)
    mask[0, frames // 2 :] = 0  # one short clip, as in real batches
    return {
        "image": torch.randn(batch, 3, 224, 224, generator=g),
        "video": torch.randn(batch, frames, 3, 224, 224, generator=g),
        "video_temporal_mask": mask,
    }


def encode(model, batch):
    """The encoder passes of a step:
    (image_global, image_tokens, video_global, video_tokens, mask)."""
    image_global, image_tokens = model.image_encoder(batch["image"])
    video_global, video_tokens = model._encode_frames(batch["video"])
    return image_global, image_tokens, video_global, video_tokens, batch["video_temporal_mask"]


def head_losses(model, features, tasks, directions):
    """The head's summed losses; one model serves every mode, so the PMD directions are set
    on it for each call."""
    model.transformer.pmd_directions = directions
    losses, _ = model.transformer.training_losses(*features, tasks=tasks)
    return sum(losses.values())


def full_step(model, batch, mode):
    """Forward + backward of one training step of ``mode`` (``backbone``: encoder only)."""
    features = encode(model, batch)
    if mode == "backbone":
        loss = sum(t.square().mean() for t in features[:4])
    else:
        loss = head_losses(model, features, *MODES[mode])
    loss.backward()


def head_step(model, leaves, tasks, directions):
    """Forward + backward of the PMD/PFR head alone, down to (leaf) encoder outputs."""
    head_losses(model, leaves, tasks, directions).backward()


def count_flops(fn):
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return counter.get_total_flops()


def best_times(jobs, rounds, clock, before=None):
    """Alternate the jobs for ``rounds`` rounds after a warm-up round; best time of each."""
    best = {name: float("inf") for name in jobs}
    for round_index in range(rounds + 1):
        for name, job in jobs.items():
            if before is not None:
                before()
            start = clock()
            job()
            elapsed = clock() - start
            if round_index > 0:
                best[name] = min(best[name], elapsed)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--chunk", type=int, default=2, help="pmd_chunk_size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--wall", action="store_true", help="wall-clock, not process CPU time")
    parser.add_argument("--full", action="store_true", help="ViT-B/32 (width 768, 12 layers)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.wall else time.process_time

    model = build(args)
    batch = make_batch(args.batch, args.frames)
    run_config = OmegaConf.create({"optimizer": {"params": {"lr": 1e-6, "weight_decay": 0.2}}})
    optimizer = torch.optim.AdamW(model.get_optimizer_parameters(run_config))

    def train_step(mode):
        optimizer.zero_grad(set_to_none=True)
        full_step(model, batch, mode)
        optimizer.step()

    modes = ["backbone", *MODES]
    flops = {mode: count_flops(lambda m=mode: full_step(model, batch, m)) for mode in modes}
    jobs = {mode: (lambda m=mode: train_step(m)) for mode in modes}
    steps = best_times(jobs, args.rounds, clock)

    with torch.no_grad():
        features = encode(model, batch)
    leaves = [t.clone().requires_grad_() for t in features[:4]] + [features[4]]
    head_jobs = {
        name: (lambda t=tasks, d=directions: head_step(model, leaves, t, d))
        for name, (_, tasks, directions) in HEADS.items()
    }
    head_flops = {name: count_flops(job) for name, job in head_jobs.items()}
    zero = lambda: model.zero_grad(set_to_none=True)  # noqa: E731
    head_times = best_times(head_jobs, 3 * args.rounds, clock, before=zero)

    with torch.no_grad():
        image_emb, _ = model.encode_image(batch["image"])
        video_emb, _ = model.encode_video(batch["video"], batch["video_temporal_mask"])
    mine = {"mining": lambda: model.transformer.mine_negatives(image_emb, video_emb)}
    mining = best_times(mine, 20, clock)["mining"]

    unit = "wall" if args.wall else "CPU"
    print(
        f"RICE training step on CPU, {torch.get_num_threads()} thread(s), {unit} seconds, best of "
        f"{args.rounds}: CLIP-shaped ViT width {model.image_encoder.token_dim}, "
        f"{len(model.image_encoder.model.vit.blocks)} layers, 224 px / patch 32, B={args.batch}, "
        f"F={args.frames}, K={model.transformer.num_negatives}, pmd_chunk_size={args.chunk}"
    )
    print(f"{'mode':<12} {'step s':>8} {'x backbone':>11} {'x vic':>7} {'GFLOP':>8} {'GFLOP/s':>8}")
    for mode in modes:
        print(
            f"{mode:<12} {steps[mode]:8.3f} {steps[mode] / steps['backbone']:11.2f} "
            f"{steps[mode] / steps['vic']:7.2f} {flops[mode] / 1e9:8.1f} "
            f"{flops[mode] / 1e9 / steps[mode]:8.1f}"
        )
    rate = flops["backbone"] / steps["backbone"]
    print(f"backbone rate {rate / 1e9:.1f} GFLOP/s; predicted time = extra FLOPs / backbone rate")
    for name, (mode, _, _) in HEADS.items():
        predicted = head_flops[name] / rate
        difference = steps[mode] - steps["vic"]
        print(
            f"{name:<8} extra {head_flops[name] / 1e9:6.2f} GFLOP, predicted {predicted:.3f} s; "
            f"head alone {head_times[name]:.3f} s (ratio {head_times[name] / predicted:.2f}); "
            f"step difference {difference:.3f} s (ratio {difference / predicted:.2f}); "
            f"target 0.8-1.2"
        )
    share = 100 * mining / steps["vic_vim"]
    print(f"mining negatives: {mining * 1e3:.3f} ms = {share:.3f}% of the vic_vim step")


if __name__ == "__main__":
    main()
