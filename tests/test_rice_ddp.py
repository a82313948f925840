"""Two gloo processes on CPU: ICL loss, its gradients, mined PMD negatives (with and without
same-product exclusion) and the PMD loss equal the single-process values on the same global
batch; so do the losses and every parameter gradient of bidirectional PMD + ICL + PFR."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from mmf.models.rice.mining import same_product_mask
from mmf.utils.build import build_model
from mmf.utils.configuration import load_yaml
from mmf.utils.distributed import get_world_size
from mmf.utils.env import setup_imports

WORLD_SIZE = 2
LOCAL_BATCH = 3
IMAGE_IDS = ["a", "b", "c", "a", "d", "b"]


def _tiny_rice(**overrides):
    setup_imports()
    base = load_yaml("mmf/configs/models/rice/defaults.yaml").model_config.rice
    config = OmegaConf.merge(
        base,
        {
            "model": "rice",
            "tasks": ["vic", "vim"],
            "tasks_sample_ratio": [0.6, 0.4],
            "image_encoder": {
                "type": "openai_clip",
                "params": dict(
                    image_size=32, patch_size=8, width=64, layers=2, heads=4, output_dim=32
                ),
            },
        },
        overrides,
    )
    torch.manual_seed(0)
    return build_model(config).eval()


def _global_batch():
    g = torch.Generator().manual_seed(7)
    batch = WORLD_SIZE * LOCAL_BATCH
    mask = torch.ones(batch, 3, dtype=torch.long)
    mask[1, 2:] = 0
    mask[4, 1:] = 0
    return (
        torch.randn(batch, 3, 32, 32, generator=g),
        torch.randn(batch, 3, 3, 32, 32, generator=g),
        mask,
    )


def _compute(model, rows):
    """Losses, negatives and ICL input gradients for the given rows of the global batch."""
    image, video, mask = (t[rows] for t in _global_batch())
    ids = [IMAGE_IDS[i] for i in range(rows.start, rows.stop)]
    head = model.transformer
    image_global, image_tokens = model.image_encoder(image)
    video_global, video_tokens = model._encode_frames(video)
    losses, _ = head.training_losses(image_global, image_tokens, video_global, video_tokens, mask)
    with torch.no_grad():
        image_emb, _ = model.encode_image(image)
        video_emb, _ = model.encode_video(video, mask)
    exclude = same_product_mask(ids, len(ids), image_emb.device)
    _, negatives, _, _ = head.mine_negatives(image_emb, video_emb)
    _, negatives_excl, valid_excl, _ = head.mine_negatives(image_emb, video_emb, exclude)
    image_leaf, video_leaf = image_emb.clone().requires_grad_(), video_emb.clone().requires_grad_()
    head.vic_loss(image_leaf, video_leaf, head.logit_scale.detach()).backward()
    return {
        "vic_loss": losses["vic_loss"].detach(),
        "vim_loss": losses["vim_loss"].detach(),
        "negatives": negatives,
        "negatives_excl": negatives_excl,
        "valid_excl": valid_excl,
        # DDP averages gradients over ranks: compare grad / W with the single-process grad.
        "image_grad": image_leaf.grad / get_world_size(),
        "video_grad": video_leaf.grad / get_world_size(),
    }


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        model = _tiny_rice()
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        torch.save(_compute(model, rows), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_two_process_gloo_matches_single_process(tmp_path):
    setup_imports()  # imported once here, inherited by the forked workers
    # fork: the children reuse the imported modules (spawn would re-import torch and timm).
    mp.start_processes(
        _worker,
        args=(str(tmp_path / "init"), str(tmp_path)),
        nprocs=WORLD_SIZE,
        join=True,
        start_method="fork",
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    single = _compute(_tiny_rice(), slice(0, WORLD_SIZE * LOCAL_BATCH))

    mean = lambda key: sum(r[key] for r in ranks) / WORLD_SIZE  # noqa: E731
    torch.testing.assert_close(mean("vic_loss"), single["vic_loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean("vim_loss"), single["vim_loss"], rtol=1e-5, atol=1e-6)
    for key in ("negatives", "negatives_excl", "valid_excl", "image_grad", "video_grad"):
        got = torch.cat([r[key] for r in ranks])
        if got.is_floating_point():
            torch.testing.assert_close(got, single[key], rtol=1e-4, atol=1e-6)
        else:
            assert torch.equal(got, single[key]), key
    # Same product "a" at global rows 0 and 3, "b" at 1 and 5: never mined for each other.
    assert (
        3 not in single["negatives_excl"][0].tolist()
        and 0 not in single["negatives_excl"][3].tolist()
    )
    assert 5 not in single["negatives_excl"][1].tolist()


BIDIRECTIONAL = {
    "tasks": ["vic", "vim", "rec"],
    "tasks_sample_ratio": [0.6, 0.2, 0.2],
    "pmd_directions": ["image", "video"],
}


def _compute_bidirectional(model, rows):
    """Losses of bidirectional PMD + ICL + PFR with same-product exclusion, and the gradient of
    every parameter divided by W (DDP averages gradients over ranks), for rows of the batch."""
    image, video, mask = (t[rows] for t in _global_batch())
    ids = [IMAGE_IDS[i] for i in range(rows.start, rows.stop)]
    exclude = same_product_mask(ids, len(ids), image.device)
    model.zero_grad(set_to_none=True)
    image_global, image_tokens = model.image_encoder(image)
    video_global, video_tokens = model._encode_frames(video)
    losses, _ = model.transformer.training_losses(
        image_global, image_tokens, video_global, video_tokens, mask, exclude
    )
    sum(losses.values()).backward()
    out = {name: loss.detach() for name, loss in losses.items()}
    for name, param in model.named_parameters():
        if param.grad is not None:
            out[f"grad/{name}"] = param.grad / get_world_size()
    return out


def _bidirectional_worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        out = _compute_bidirectional(_tiny_rice(**BIDIRECTIONAL), rows)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_bidirectional_pmd_two_process_gloo_matches_single_process(tmp_path):
    setup_imports()
    mp.start_processes(
        _bidirectional_worker,
        args=(str(tmp_path / "init"), str(tmp_path)),
        nprocs=WORLD_SIZE,
        join=True,
        start_method="fork",
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    single = _compute_bidirectional(_tiny_rice(**BIDIRECTIONAL), slice(0, WORLD_SIZE * LOCAL_BATCH))
    assert {"vic_loss", "vim_loss", "vim_video_loss", "rec_loss"} <= set(single)
    assert set(ranks[0]) == set(ranks[1]) == set(single)
    grads = [key for key in single if key.startswith("grad/")]
    # Encoder, cross model (both directions reach it), vim and rec heads, logit scale.
    for part in (
        "image_encoder.",
        "transformer.transformer.",
        "heads.vim",
        "heads.rec",
        "logit_scale",
    ):
        assert any(part in key for key in grads), part
    for key, expected in single.items():
        # Losses are per-rank means (average them); gradients were divided by W (sum them).
        got = sum(r[key] for r in ranks)
        if not key.startswith("grad/"):
            got = got / WORLD_SIZE
        torch.testing.assert_close(
            got, expected, rtol=1e-4, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}"
        )
