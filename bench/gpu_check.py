"""GPU check: the figures a CUDA machine should show, in one run of under 5 minutes.

Prints, each measured in this run:

1. training clips/s of RICE (ICL + PMD + PFR; ViT-B/32 shapes, random weights, fp16 autocast
   + GradScaler, AdamW) against the backbone-only step (encoder passes + backward, no head)
   at the same batch: 96 clips x 10 frames (+ 96 shop images), or the largest batch that fits;
2. decode clips/s (10 frames a clip) of the loader's ``output: jpeg`` step on the GPU
   (batched ``torchvision.io.decode_jpeg(device="cuda")`` + resize + crop) against the CPU,
   on the demo dataset's frames;
3. evaluation images/s: ``encode_image`` under ``no_grad`` + autocast, batches of 256;
4. a 2-update training run of the demo config through ``torchrun --nproc_per_node=1`` with
   the NCCL backend, on a small demo dataset built here.

On a machine without CUDA it stops with one line (exit code 1). ``--device cpu --tiny`` runs
every part on the CPU with a tiny encoder (fp32, gloo): the test suite runs it.

Usage: ``bash bench/gpu_check.sh`` or ``python bench/gpu_check.py [--device cuda|cpu]
[--tiny] [--workdir DIR]``
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import torch
from omegaconf import OmegaConf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from rice_step import encode, head_losses  # noqa: E402  (bench/: the step rice_step times)

from mmf.common.registry import registry  # noqa: E402
from mmf.datasets.prefetch import decode_images  # noqa: E402
from mmf.utils.build import build_model  # noqa: E402
from mmf.utils.configuration import get_mmf_root, load_yaml  # noqa: E402
from mmf.utils.env import setup_imports  # noqa: E402

VIT_B_32 = {"image_size": 224, "patch_size": 32, "width": 768, "layers": 12, "heads": 12,
            "output_dim": 512}
TINY = {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "heads": 2,
        "output_dim": 16}
TASKS = ("vic", "vim", "rec")
DEMO_ARGS = ["--num_products", "8", "--clips_per_product", "2", "--num_train_lives", "2",
             "--num_val_lives", "1", "--num_lives", "1", "--val_query_products_per_live", "2",
             "--val_queries_per_live", "2", "--query_products_per_live", "2",
             "--queries_per_live", "2", "--foreign_per_live", "2", "--gallery_size", "1", "1000"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny encoder and batches")
    parser.add_argument("--workdir", help="folder for the demo data and run (default: temp)")
    return parser.parse_args(argv)


def require_device(name):
    """The torch device; exits with one line when CUDA is asked for and absent."""
    if name == "cuda" and not torch.cuda.is_available():
        built = torch.version.cuda or "no CUDA"
        sys.exit(
            f"gpu_check: no CUDA device (torch {torch.__version__} built with {built}, "
            "torch.cuda.is_available() is False); --device cpu --tiny rehearses it on the CPU"
        )
    return torch.device(name)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_call(fn, device, warmup, repeats):
    """Seconds per call of ``fn`` (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def build_rice(encoder, device):
    setup_imports()
    base = load_yaml(get_mmf_root() / "configs" / "models" / "rice" / "defaults.yaml")
    config = OmegaConf.merge(base.model_config.rice, {
        "model": "rice", "tasks": list(TASKS), "tasks_sample_ratio": [0.6, 0.2, 0.2],
        "image_encoder": {"type": "openai_clip", "params": encoder},
    })
    torch.manual_seed(0)
    return build_model(config).to(device)


def random_batch(batch, frames, size, device):
    return {
        "image": torch.randn(batch, 3, size, size, device=device),
        "video": torch.randn(batch, frames, 3, size, size, device=device),
        "video_temporal_mask": torch.ones(batch, frames, dtype=torch.long, device=device),
    }


def training_steps(model, device):
    """``step(batch, mode)``: one optimizer step of ``mode`` (``backbone`` or ``rice``)."""
    fp16 = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)

    def step(batch, mode):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            features = encode(model, batch)
            if mode == "backbone":
                loss = sum(t.float().square().mean() for t in features[:4])
            else:
                loss = head_losses(model, features, TASKS, ("image",))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def train_section(args, device):
    encoder = TINY if args.tiny else VIT_B_32
    frames = 2 if args.tiny else 10
    model = build_rice(encoder, device).train()
    step = training_steps(model, device)
    for batch_size in ((4, 2) if args.tiny else (96, 64, 48, 32, 16, 8)):
        try:
            batch = random_batch(batch_size, frames, encoder["image_size"], device)
            times = {
                mode: per_call(lambda b=batch, m=mode: step(b, m), device, 2, 3 if args.tiny else 8)
                for mode in ("rice", "backbone")
            }
            break
        except torch.cuda.OutOfMemoryError:
            batch = None
            torch.cuda.empty_cache()
            print(f"  batch {batch_size} x {frames} frames does not fit; trying a smaller one")
    else:
        sys.exit("gpu_check: not even a batch of 8 clips fits on the device")
    rice, backbone = batch_size / times["rice"], batch_size / times["backbone"]
    print(f"training, batch {batch_size} clips x {frames} frames + {batch_size} images, "
          f"{'fp16 autocast + GradScaler' if device.type == 'cuda' else 'fp32'}:")
    print(f"  RICE (ICL+PMD+PFR) {rice:8.1f} clips/s   backbone only {backbone:8.1f} clips/s   "
          f"ratio {rice / backbone:.2f}")
    return model


def demo_jpegs(root, count):
    """Up to ``count`` demo frames as uint8 tensors of their bytes."""
    names = []
    for folder, _, files in os.walk(os.path.join(root, "training_frames")):
        names += [os.path.join(folder, f) for f in sorted(files) if f.endswith(".jpg")]
    if not names:
        sys.exit(f"gpu_check: no demo frames under {root}/training_frames")
    with_bytes = []
    for index in range(count):
        with open(names[index % len(names)], "rb") as handle:
            with_bytes.append(torch.frombuffer(bytearray(handle.read()), dtype=torch.uint8))
    return with_bytes


def decode_section(args, device, data_dir):
    """The loader's ``output: jpeg`` step (``mmf.datasets.prefetch.decode_images``: batched
    decode + 256 resize + 224 crop) on the GPU against the CPU."""
    processor = registry.get_processor_class("torchvision_transforms")(OmegaConf.create({
        "output": "jpeg", "transforms": [
            {"type": "Resize", "params": {"size": [256, 256]}},
            {"type": "CenterCrop", "params": {"size": [224, 224]}}, "ToTensor"],
    }))
    images = [
        processor(SimpleNamespace(data=data, crop=None, name="demo frame"))
        for data in demo_jpegs(data_dir, 40 if args.tiny else 400)
    ]
    clips = len(images) / 10
    cpu_device = torch.device("cpu")
    cpu = per_call(lambda: decode_images(images, cpu_device), cpu_device, 1,
                   2 if args.tiny else 5)
    line = (f"JPEG decode of demo frames, {len(images)} a call: CPU {clips / cpu:8.1f} clips/s")
    if device.type == "cuda":
        gpu = per_call(lambda: decode_images(images, device), device, 2, 10)
        line += f"   GPU {clips / gpu:8.1f} clips/s   ratio {cpu / gpu:.2f}"
    print(line + "  (the loader's output: jpeg step: decode + resize + crop)")


def eval_section(args, device, model):
    model.eval()
    size = (TINY if args.tiny else VIT_B_32)["image_size"]
    batch_size = 8 if args.tiny else 256
    images = torch.randn(batch_size, 3, size, size, device=device)

    def encode_images():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16,
                                             enabled=device.type == "cuda"):
            model.encode_image(images)

    seconds = per_call(encode_images, device, 2, 3 if args.tiny else 20)
    print(f"evaluation encode_image, batch {batch_size}: {batch_size / seconds:10.1f} images/s")


def make_demo_data(data_dir):
    subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "make_demo_data.py"), "--out", data_dir,
         *DEMO_ARGS], check=True, capture_output=True, timeout=120,
    )


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_section(args, device, workdir):
    backend = "nccl" if device.type == "cuda" else "gloo"
    save_dir = os.path.join(workdir, f"save_{os.getpid()}")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1",
        f"--master_port={free_port()}", os.path.join(REPO, "mmf_cli", "run.py"),
        "config=" + os.path.join(REPO, "projects/videotoshop/configs/demo_vic.yaml"),
        "model=rice", "dataset=videotoshop", f"env.data_dir={workdir}",
        f"env.save_dir={save_dir}", "training.max_updates=2",
        f"training.batch_size={2 if args.tiny else 8}", "training.num_workers=0",
        "training.tensorboard=false",
        f"training.device={device.type}", f"distributed.backend={backend}",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=REPO)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        sys.exit(f"gpu_check: the torchrun {backend} run failed: {tail}")
    ok = os.path.isfile(os.path.join(save_dir, "current.ckpt"))
    print(f"torchrun --nproc_per_node=1, {backend}, 2 updates of the demo config: "
          f"{'ok' if ok else 'no current.ckpt written'} ({seconds:.0f} s)")
    if not ok:
        sys.exit(1)


def main(argv=None):
    args = parse_args(argv)
    device = require_device(args.device)
    started = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_check on {name}, torch {torch.__version__}{' (tiny)' if args.tiny else ''}")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        workdir = args.workdir or scratch
        data_dir = os.path.join(workdir, "lpr4m")
        if not os.path.isdir(os.path.join(data_dir, "training_frames")):
            make_demo_data(data_dir)
        model = train_section(args, device)
        decode_section(args, device, data_dir)
        eval_section(args, device, model)
        del model
        torchrun_section(args, device, workdir)
    print(f"gpu_check: done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
