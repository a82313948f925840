"""Training and running the detector: two plain loops."""
import logging
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mmf.detection.data import FrameImages, collate

logger = logging.getLogger(__name__)

WARMUP_STEPS = 50


def train_detector(model, loader, epochs=1, max_steps=None, max_seconds=None, lr=2e-4,
                   weight_decay=1e-4, device="cpu"):
    """AdamW with a linear warm-up over ``WARMUP_STEPS`` steps, for ``epochs`` passes over
    ``loader`` (batches of ``FrameBoxes`` samples), stopping early at ``max_steps`` steps or
    after ``max_seconds``. Returns {"steps", "images", "seconds", "images_per_s", "loss"}
    (loss: the mean total loss of the last 20 steps)."""
    model.to(device).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS)
    )
    steps, images_seen, recent = 0, 0, []
    start = time.perf_counter()
    total = epochs * len(loader) if max_steps is None else min(max_steps, epochs * len(loader))
    progress = tqdm(total=total, desc="detector", unit="batch")
    done = False
    for _ in range(epochs):
        for images, targets in loader:
            images = [image.to(device) for image in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            warmup.step()
            steps += 1
            images_seen += len(images)
            recent = (recent + [loss.item()])[-20:]
            progress.update()
            progress.set_postfix(loss=f"{np.mean(recent):.3f}")
            elapsed = time.perf_counter() - start
            if (max_steps is not None and steps >= max_steps) or (
                max_seconds is not None and elapsed >= max_seconds
            ):
                done = True
                break
        if done:
            break
    progress.close()
    seconds = time.perf_counter() - start
    result = {
        "steps": steps, "images": images_seen, "seconds": seconds,
        "images_per_s": images_seen / seconds if seconds else 0.0,
        "loss": float(np.mean(recent)) if recent else float("nan"),
    }
    logger.info(
        "detector: %d steps, %d images in %.1f s (%.1f images/s), loss %.3f", steps,
        images_seen, seconds, result["images_per_s"], result["loss"],
    )
    return result


@torch.no_grad()
def detect(model, images, device="cpu"):
    """Boxes of a batch: ``images`` a list of float [3, H, W] in [0, 1] -> per image
    (boxes float64 [m, 4] in that image's pixels, scores [m]), highest score first."""
    model.to(device).eval()
    outputs = model([image.to(device) for image in images])
    results = []
    for output in outputs:
        order = torch.argsort(output["scores"], descending=True)
        results.append((
            output["boxes"][order].cpu().double().numpy(),
            output["scores"][order].cpu().double().numpy(),
        ))
    return results


def detect_frames(model, paths, batch_size=8, workers=0, device="cpu"):
    """Runs ``model`` on frames ``{frame_id: path}`` in batches, with a progress bar.

    Yields, per batch, a list of (frame_id, (width, height), boxes float64 [m, 4] in frame
    pixels, scores [m]), highest score first."""
    loader = DataLoader(
        FrameImages(paths), batch_size=batch_size, num_workers=workers, collate_fn=collate
    )
    with tqdm(total=len(paths), desc="detect", unit="frame") as progress:
        for frame_ids, images in loader:
            results = detect(model, images, device)
            progress.update(len(images))
            yield [
                (frame_id, (image.shape[2], image.shape[1]), boxes, scores)
                for frame_id, image, (boxes, scores) in zip(frame_ids, images, results, strict=True)
            ]
