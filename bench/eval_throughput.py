"""Benchmark: throughput of the evaluation pipeline against a bare backbone forward.

Writes a synthetic LPR test split (gallery JPEGs and 10-frame query clips at --image_size)
to a temporary folder, then, in one run and with the same model (RICE with a randomly
initialised ``openai_clip`` ViT-B/32 image tower unless --tiny):

1. pipeline: ``videotoshop`` dataset (JPEG decode + eval transforms) -> DataLoader ->
   ``encode_gallery`` / ``encode_queries`` of ``mmf.evaluation.encoding``;
2. bare: ``model.encode_image`` / ``model.encode_video`` on the same images, already decoded
   and transformed in memory, same batch size.

Each measurement is repeated --rounds times, alternating pipeline and bare, and the best
round of each is kept (the machine may be shared). Prints images/s of both (query clips
count their frames) and the ratio pipeline / bare; the target is >= 0.9.

Usage: ``python bench/eval_throughput.py [--device cpu|cuda] [--num_gallery 128]
[--num_queries 24] [--batch_size 32] [--query_batch_size 4] [--num_workers 2] [--tiny]``
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmf.common.registry import registry  # noqa: E402
from mmf.evaluation.encoding import encode_gallery, encode_queries, make_loader  # noqa: E402
from mmf.utils.build import build_model  # noqa: E402
from mmf.utils.configuration import component_layers, register_resolvers  # noqa: E402
from mmf.utils.env import setup_imports  # noqa: E402

LIVE = "0b8e7a52-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
FRAMES = 10


def write_data(root, num_gallery, num_queries, size, seed=0):
    rng = np.random.default_rng(seed)
    annotations = os.path.join(root, "annotations")
    os.makedirs(annotations)

    def save(path, pixels):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)

    # Stored larger than the model input, as real data (resized by the eval transform).
    stored = int(size * 1.25)
    lines = []
    for index in range(num_gallery):
        pixels = rng.integers(0, 255, (stored, stored, 3), dtype=np.uint8)
        save(os.path.join(root, "gallery", LIVE, f"img{index:05d}.jpg"), pixels)
        lines.append(f"{LIVE}/img{index:05d}.jpg")
    queries, gt = {}, {}
    for index in range(num_queries):
        clip = f"{LIVE}-{1000 + index}-{2000 + index}"
        frames = []
        for frame in range(FRAMES):
            pixels = rng.integers(0, 255, (stored, stored, 3), dtype=np.uint8)
            save(os.path.join(root, "query", clip, f"{clip}-{frame:04d}.jpg"), pixels)
            frames.append(f"{clip}/{clip}-{frame:04d}.jpg")
        queries[clip] = {"frames": frames, "gt": ["img00000"]}
        gt[clip] = ["img00000"]
    with open(os.path.join(annotations, "gallery_main.txt"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(os.path.join(annotations, "query_tenframes.json"), "w") as handle:
        json.dump(queries, handle)
    with open(os.path.join(annotations, f"test_videoid_to_gtimage_{len(gt)}.json"), "w") as handle:
        json.dump(gt, handle)


def build(data_dir, size, tiny):
    register_resolvers()
    setup_imports()
    config = OmegaConf.merge(*component_layers("rice", ["videotoshop"]))
    node = config.dataset_config.videotoshop
    node.data_dir = data_dir
    crop = {"type": "CenterCrop", "params": {"size": [size, size]}}
    resize = {"type": "Resize", "params": {"size": [int(size * 256 / 224)] * 2}}
    node.processors.eval_image_processor.params.transforms[0] = resize
    node.processors.eval_image_processor.params.transforms[1] = crop
    OmegaConf.resolve(config)
    builder = registry.get_builder_class("videotoshop")()
    gallery, queries = builder.load_gallery(node), builder.load_query(node)

    model_node = OmegaConf.merge(config.model_config.rice, {"model": "rice"})
    if tiny:
        model_node.image_encoder.params = {
            "image_size": size, "patch_size": 16, "width": 64, "layers": 2, "heads": 2,
            "output_dim": 32,
        }
    else:
        model_node.image_encoder.params.image_size = size
    return gallery, queries, build_model(model_node).eval()


@torch.inference_mode()
def bare_forward(model, tensors, batch_size, device, video=False):
    start = time.perf_counter()
    for begin in range(0, len(tensors), batch_size):
        batch = torch.stack(tensors[begin : begin + batch_size]).to(device)
        if video:
            model.encode_video(batch, torch.ones(batch.shape[:2], dtype=torch.long, device=device))
        else:
            model.encode_image(batch)
    _sync(device)
    return time.perf_counter() - start


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num_gallery", type=int, default=128)
    parser.add_argument("--num_queries", type=int, default=24)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32, help="gallery images per batch")
    parser.add_argument(
        "--query_batch_size", type=int, default=4, help="clips (x10 frames) per batch"
    )
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a tiny ViT instead of ViT-B/32")
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as root:
        write_data(root, args.num_gallery, args.num_queries, args.image_size)
        gallery, queries, model = build(root, args.image_size, args.tiny)
        model.to(device)
        images = [gallery[i]["image"] for i in range(len(gallery))]
        clips = [queries[i]["video"] for i in range(len(queries))]
        # Warm-up (allocator, kernels) on a few items, not timed.
        bare_forward(model, images[: args.batch_size], args.batch_size, device)
        print(
            f"model: {'tiny ViT' if args.tiny else 'ViT-B/32'} at {args.image_size}px, device "
            f"{device}, batch {args.batch_size} images / {args.query_batch_size} clips, loader "
            f"workers {args.num_workers}, "
            f"torch threads {torch.get_num_threads()}"
        )
        for name, dataset, count, tensors, video, batch_size in (
            ("gallery images", gallery, len(images), images, False, args.batch_size),
            ("query frames", queries, len(clips) * FRAMES, clips, True, args.query_batch_size),
        ):
            pipeline = bare = 0.0
            for _ in range(args.rounds):
                loader = make_loader(dataset, batch_size, args.num_workers)
                start = time.perf_counter()
                if video:
                    encode_queries(model, loader, device, progress=False)
                else:
                    encode_gallery(model, loader, device, progress=False)
                _sync(device)
                pipeline = max(pipeline, count / (time.perf_counter() - start))
                bare = max(bare, count / bare_forward(model, tensors, batch_size, device, video))
            print(
                f"{name}: pipeline {pipeline:.1f} img/s, bare forward {bare:.1f} img/s, "
                f"ratio {pipeline / bare:.3f} (target >= 0.9)"
            )


if __name__ == "__main__":
    main()
