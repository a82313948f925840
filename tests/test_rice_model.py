"""RICE math on a tiny CLIP-shaped model: ICL, mining, PMD, PFR gradients, the 8-head split,
parameter groups, task sampling and the inference API."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mmf.common.errors import ConfigError
from mmf.models.rice.cross_model import CrossConfig, CrossModel, SelfBlock
from mmf.models.rice.heads import embed_video
from mmf.models.rice.mining import mine_hard_negatives
from mmf.modules.losses import ContrastiveLoss, HardNegativeCrossEntropyLoss
from mmf.utils.build import build_model
from mmf.utils.configuration import load_yaml
from mmf.utils.env import setup_imports

TINY = dict(image_size=32, patch_size=8, width=64, layers=2, heads=4, output_dim=32)


def tiny_rice(**overrides):
    setup_imports()
    base = load_yaml("mmf/configs/models/rice/defaults.yaml").model_config.rice
    config = OmegaConf.merge(
        base,
        {
            "model": "rice",
            "tasks": ["vic", "vim", "rec"],
            "tasks_sample_ratio": [0.6, 0.2, 0.2],
            "lr_multiplier": 100,
            "image_encoder": {"type": "openai_clip", "params": TINY},
            "transformer_model": {"attention_probs_dropout_prob": 0.0},
        },
        overrides,
    )
    torch.manual_seed(0)
    return build_model(config)


def tiny_batch(batch=4, frames=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, frames, dtype=torch.long)
    mask[1 % batch, 2:] = 0
    mask[2 % batch, 1:] = 0
    video = torch.randn(batch, frames, 3, 32, 32, generator=g) * mask[:, :, None, None, None]
    return {
        "image": torch.randn(batch, 3, 32, 32, generator=g),
        "video": video,
        "video_temporal_mask": mask,
        "image_id": [f"img{i}" for i in range(batch)],
    }


@pytest.fixture(scope="module")
def model():
    return tiny_rice()


def _log_softmax_at(row, index):
    return row[index] - math.log(sum(math.exp(v) for v in row))


def test_contrastive_loss_equals_hand_computation():
    video = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    image = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    s = 4.0
    loss = ContrastiveLoss()(s * video, s * image)
    # logits_v2i[i][j] = s^2 <video_i, image_j>, logits_i2v[i][j] = s^2 <image_i, video_j>
    v2i = [[16 * 0.8, 0.0], [16 * (0.48 + 0.48), 16 * 0.8]]
    i2v = [[16 * 0.8, 16 * (0.48 + 0.48)], [0.0, 16 * 0.8]]
    expected = (
        -(
            _log_softmax_at(v2i[0], 0)
            + _log_softmax_at(v2i[1], 1)
            + _log_softmax_at(i2v[0], 0)
            + _log_softmax_at(i2v[1], 1)
        )
        / 4
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Excluding column 1 of row 0 and column 0 of row 1 leaves only the positives: loss 0.
    exclude = torch.tensor([[False, True], [True, False]])
    assert ContrastiveLoss()(s * video, s * image, exclude).item() == pytest.approx(0.0, abs=1e-7)


def test_hard_negative_cross_entropy():
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    expected = -(_log_softmax_at([2.0, 1.0, 0.0], 0) + _log_softmax_at([0.0, 3.0, 1.0], 0)) / 2
    assert HardNegativeCrossEntropyLoss()(scores).item() == pytest.approx(expected, rel=1e-6)
    diag = HardNegativeCrossEntropyLoss({"diag": True})(scores[:, :2])
    assert diag.item() == pytest.approx(
        -(_log_softmax_at([2.0, 1.0], 0) + _log_softmax_at([0.0, 3.0], 1)) / 2, rel=1e-6
    )


def test_padded_frames_do_not_change_the_clip_embedding(model):
    model.eval()
    batch = tiny_batch()
    video = batch["video"].clone()
    noisy = video.clone()
    noisy[1, 2] = torch.randn(3, 32, 32)
    noisy[2, 1:] = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        emb, tokens = model.encode_video(video, batch["video_temporal_mask"])
        emb_noisy, _ = model.encode_video(noisy, batch["video_temporal_mask"])
        single, _ = model.encode_video(video[2:3, :1], torch.ones(1, 1))
    torch.testing.assert_close(emb, emb_noisy)
    torch.testing.assert_close(emb[2:3], single)
    assert tokens.shape == (4, 3, 17, 64)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))


def test_masked_mean_pooling():
    frames = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    out = embed_video(frames, torch.tensor([[1, 1, 0]]))
    torch.testing.assert_close(out, F.normalize(torch.tensor([[0.5, 0.5]]), dim=-1))


def test_mining_returns_top_non_positive_columns():
    g = torch.Generator().manual_seed(0)
    similarity = torch.randn(5, 8, generator=g)
    positive = torch.tensor([0, 1, 2, 3, 4]) + 3
    indices, valid = mine_hard_negatives(similarity, positive, 3)
    for row in range(5):
        order = [c for c in similarity[row].argsort(descending=True).tolist() if c != positive[row]]
        assert indices[row].tolist() == order[:3]
    assert valid.all()
    exclude = torch.zeros(5, 8, dtype=torch.bool)
    exclude[0, indices[0, 0]] = True
    indices2, _ = mine_hard_negatives(similarity, positive, 3, exclude)
    assert (
        indices2[0].tolist()
        == [
            c
            for c in similarity[0].argsort(descending=True).tolist()
            if c not in (3, indices[0, 0].item())
        ][:3]
    )
    # Fewer allowed columns than K: the extra slots are flagged invalid.
    _, valid = mine_hard_negatives(
        similarity[:, :3], torch.tensor([0, 1, 2, 0, 1]), 3, torch.zeros(5, 3, dtype=torch.bool)
    )
    assert valid.shape == (5, 2) and valid.all()
    block = torch.ones(5, 3, dtype=torch.bool)
    _, valid = mine_hard_negatives(similarity[:, :3], torch.tensor([0, 1, 2, 0, 1]), 2, block)
    assert not valid.any()


def test_training_step_returns_all_losses_and_metrics(model):
    model.train()
    out = model(tiny_batch())
    assert set(out["losses"]) == {"vic_loss", "vim_loss", "rec_loss"}
    assert set(out["train_metrics"]) == {"vim/dual_accuracy", "vim/cross_accuracy"}
    assert all(torch.isfinite(v) for v in out["losses"].values())
    sum(out["losses"].values()).backward()
    assert model.transformer.heads["vim"].weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_pmd_loss_matches_pair_scores_of_mined_candidates(model):
    model.eval()
    head = model.transformer
    batch = tiny_batch()
    with torch.no_grad():
        image_emb, image_tokens = model.encode_image(batch["image"])
        video_emb, video_tokens = model.encode_video(batch["video"], batch["video_temporal_mask"])
        loss, metrics = head.pmd_loss(
            image_emb, video_emb, image_tokens, video_tokens, batch["video_temporal_mask"]
        )
        positive, negatives, _, _ = head.mine_negatives(image_emb, video_emb)
        rows = []
        for i in range(4):
            columns = [positive[i].item()] + negatives[i].tolist()
            scores = model.pair_score(
                image_tokens[i : i + 1].expand(len(columns), -1, -1),
                video_tokens[columns],
                batch["video_temporal_mask"][columns],
            )
            rows.append(scores)
        scores = torch.stack(rows)
    assert negatives.shape == (4, 3)
    assert (negatives != positive[:, None]).all()
    torch.testing.assert_close(loss, -F.log_softmax(scores, dim=1)[:, 0].mean())
    assert metrics["vim/cross_accuracy"].item() == (scores.argmax(1) == 0).float().mean().item()
    # The score is 10 * cos, bounded by 10.
    assert scores.abs().max() <= 10.0 + 1e-5


def test_pair_score_ignores_padded_frames(model):
    model.eval()
    batch = tiny_batch()
    with torch.no_grad():
        _, image_tokens = model.encode_image(batch["image"])
        _, video_tokens = model.encode_video(batch["video"], batch["video_temporal_mask"])
        score = model.pair_score(image_tokens, video_tokens, batch["video_temporal_mask"])
        noisy = video_tokens.clone()
        noisy[1, 2] = torch.randn_like(noisy[1, 2])
        torch.testing.assert_close(
            model.pair_score(image_tokens, noisy, batch["video_temporal_mask"]), score
        )
    assert score.shape == (4,) and model.has_pair_score


def test_cross_attention_maps_are_probabilities_over_real_frames(model):
    model.eval()
    batch = tiny_batch()
    mask = batch["video_temporal_mask"]
    with torch.no_grad():
        _, image_tokens = model.encode_image(batch["image"])
        _, video_tokens = model.encode_video(batch["video"], mask)
        maps = model.cross_attention(image_tokens, video_tokens, mask)
    frames, tokens = video_tokens.shape[1], video_tokens.shape[2]
    assert maps.shape == (4, 8, image_tokens.shape[1], frames * tokens)
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
    per_frame = maps.view(4, 8, -1, frames, tokens).sum(dim=(1, 2, 4))
    assert torch.all(per_frame[mask == 0] == 0) and torch.all(per_frame[mask == 1] > 0)


def test_pfr_gradients_reach_only_the_attention_path(model):
    model.train()
    head = model.transformer
    batch = tiny_batch()
    model.zero_grad(set_to_none=True)
    _, image_tokens = model.encode_image(batch["image"])
    _, video_tokens = model.encode_video(batch["video"], batch["video_temporal_mask"])
    image_leaf = image_tokens.detach().requires_grad_()
    video_leaf = video_tokens.detach().requires_grad_()
    head.pfr_loss(image_leaf, video_leaf, batch["video_temporal_mask"]).backward()
    self_block, cross_block = head.transformer.transformer.layers
    width = 64

    def nonzero(t):
        return t is not None and t.abs().sum() > 0

    assert all(nonzero(p.grad) for p in head.heads["rec"].parameters())
    in_proj = cross_block.attn.in_proj_weight.grad
    assert nonzero(in_proj[:width]) and nonzero(in_proj[width : 2 * width])  # q and k
    assert not nonzero(in_proj[2 * width :])  # v
    assert not nonzero(cross_block.attn.in_proj_bias.grad[2 * width :])
    assert nonzero(cross_block.ln_1.weight.grad)
    for module in (
        cross_block.attn.out_proj,
        cross_block.mlp,
        cross_block.ln_2,
        head.transformer.pooler,
    ):
        assert all(not nonzero(p.grad) for p in module.parameters())
    assert all(nonzero(p.grad) for p in self_block.attn.parameters())
    assert head.heads["vim"].weight.grad is None and head.logit_scale.grad is None
    # Into the encoder through the queries (image) and the keys (video); not through the
    # detached values/targets: zeroing the attention path would leave no gradient.
    assert nonzero(image_leaf.grad) and nonzero(video_leaf.grad)
    assert not nonzero(video_leaf.grad[1, 2]) and not nonzero(video_leaf.grad[2, 1:])  # padded keys
    model.zero_grad(set_to_none=True)


def test_pfr_mask_padding_option_changes_only_padded_clips():
    plain = tiny_rice()
    masked = tiny_rice(pfr_mask_padding=True)
    masked.load_state_dict(plain.state_dict())
    batch = tiny_batch()
    batch["video_temporal_mask"][:] = 1
    with torch.no_grad():
        _, image_tokens = plain.encode_image(batch["image"])
        _, video_tokens = plain.encode_video(batch["video"], batch["video_temporal_mask"])
        full = [
            m.transformer.pfr_loss(image_tokens, video_tokens, batch["video_temporal_mask"])
            for m in (plain, masked)
        ]
        batch["video_temporal_mask"][0, 1:] = 0
        padded = [
            m.transformer.pfr_loss(image_tokens, video_tokens, batch["video_temporal_mask"])
            for m in (plain, masked)
        ]
    torch.testing.assert_close(full[0], full[1])
    assert not torch.allclose(padded[0], padded[1])


def test_cross_model_uses_clip_blocks_with_an_eight_head_split():
    config = CrossConfig(hidden_size=64, intermediate_size=256, num_attention_heads=8)
    model = CrossModel(config).eval()
    g = torch.Generator().manual_seed(0)
    clip = {"positional_embedding": torch.randn(50, 64, generator=g)}
    for i in range(4):
        for name, shape in [
            ("attn.in_proj_weight", (192, 64)),
            ("attn.in_proj_bias", (192,)),
            ("attn.out_proj.weight", (64, 64)),
            ("attn.out_proj.bias", (64,)),
            ("ln_1.weight", (64,)),
            ("ln_1.bias", (64,)),
            ("mlp.c_fc.weight", (256, 64)),
            ("mlp.c_fc.bias", (256,)),
            ("mlp.c_proj.weight", (64, 256)),
            ("mlp.c_proj.bias", (64,)),
            ("ln_2.weight", (64,)),
            ("ln_2.bias", (64,)),
        ]:
            clip[f"transformer.resblocks.{i}.{name}"] = torch.randn(*shape, generator=g) * 0.2
    model.init_from_clip(clip, "test")
    self_block, cross_block = model.transformer.layers
    assert torch.equal(
        self_block.attn.in_proj_weight, clip["transformer.resblocks.2.attn.in_proj_weight"]
    )
    assert torch.equal(
        cross_block.attn.in_proj_weight, clip["transformer.resblocks.3.attn.in_proj_weight"]
    )
    assert torch.equal(model.embeddings.position_embedding.weight, clip["positional_embedding"])
    assert self_block.ln_1.eps == 1e-12 and cross_block.ln_1.eps == 1e-5

    # Cross attention written head by head: q|k|v thirds, head h = rows [8h, 8h+8) of each third.
    query, keys = torch.randn(2, 5, 64, generator=g), torch.randn(2, 7, 64, generator=g)
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[1, 4:] = False
    w = clip["transformer.resblocks.3.attn.in_proj_weight"]
    b = clip["transformer.resblocks.3.attn.in_proj_bias"]
    h = F.layer_norm(
        query,
        (64,),
        clip["transformer.resblocks.3.ln_1.weight"],
        clip["transformer.resblocks.3.ln_1.bias"],
        1e-5,
    )
    heads, maps = [], []
    for head in range(8):
        rows = slice(8 * head, 8 * head + 8)
        q = F.linear(h, w[:64][rows], b[:64][rows])
        k = F.linear(keys, w[64:128][rows], b[64:128][rows])
        v = F.linear(keys, w[128:][rows], b[128:][rows])
        probs = (
            ((q @ k.transpose(1, 2)) / math.sqrt(8))
            .masked_fill(~valid[:, None, :], float("-inf"))
            .softmax(-1)
        )
        heads.append(probs @ v)
        maps.append(probs * math.sqrt(8))
    attn = F.linear(
        torch.cat(heads, -1),
        clip["transformer.resblocks.3.attn.out_proj.weight"],
        clip["transformer.resblocks.3.attn.out_proj.bias"],
    )
    with torch.no_grad():
        out, got_maps = cross_block.attn(h, keys, valid, return_attention=True)
        out_fast, _ = cross_block.attn(h, keys, valid)
    torch.testing.assert_close(out, attn, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_fast, attn, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_maps, torch.stack(maps, 1), rtol=1e-5, atol=1e-5)


def test_self_block_is_pre_ln_attention_then_quickgelu_mlp():
    block = SelfBlock(
        CrossConfig(hidden_size=16, intermediate_size=32, num_attention_heads=8)
    ).eval()
    x = torch.randn(2, 3, 16)
    with torch.no_grad():
        h = block.ln_1(x)
        y = x + block.attn(h, h, h, need_weights=False)[0]
        m = block.mlp.c_fc(block.ln_2(y))
        expected = y + block.mlp.c_proj(m * torch.sigmoid(1.702 * m))
        torch.testing.assert_close(block(x), expected)


def test_parameter_groups(model):
    config = OmegaConf.create({"optimizer": {"params": {"lr": 1e-6, "weight_decay": 0.2}}})
    groups = model.get_optimizer_parameters(config)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(trainable)
    assert len(groups) == 4
    by_name = {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["names"]}
    assert by_name["transformer.logit_scale"] == (1e-6, 0.2)
    assert by_name["image_encoder.model.proj"] == (1e-6, 0.2)
    assert by_name["transformer.heads.vim.weight"] == pytest.approx((1e-4, 0.2))
    assert by_name["transformer.transformer.pooler.layer_norm.bias"] == pytest.approx((1e-4, 0.0))
    assert by_name[
        "transformer.transformer.transformer.layers.1.attn.in_proj_bias"
    ] == pytest.approx((1e-4, 0.0))
    assert by_name["transformer.transformer.embeddings.layer_norm.weight"] == pytest.approx(
        (1e-4, 0.2)
    )
    assert all(lr == 1e-6 for n, (lr, _) in by_name.items() if n.startswith("image_encoder."))
    assert all(wd == 0.0 for n, (_, wd) in by_name.items() if "bias" in n)
    optimizer = torch.optim.AdamW(groups)
    assert len(optimizer.param_groups) == 4

    frozen = tiny_rice(
        training_head_type="contrastive",
        tasks=["vic"],
        tasks_sample_ratio=[1.0],
        freeze_image_encoder=True,
    )
    groups = frozen.get_optimizer_parameters(config)
    assert [g["names"] for g in groups] == [
        ["transformer.logit_scale"],
        ["transformer.contrastive_norm.norm_s"],
    ]
    assert [g["lr"] for g in groups] == pytest.approx([1e-6, 1e-4])
    frozen.train()
    assert not frozen.image_encoder.training


def test_sample_tasks_draws_one_task_per_step_identically_on_every_rank():
    only_vim = tiny_rice(sample_tasks=True, tasks_sample_ratio=[0.0, 1.0, 0.0]).train()
    assert set(only_vim(tiny_batch())["losses"]) == {"vim_loss"}
    a = tiny_rice(
        sample_tasks=True, tasks_sample_ratio=[0.5, 0.25, 0.25], tasks=["vic", "vim", "rec"]
    )
    b = tiny_rice(
        sample_tasks=True, tasks_sample_ratio=[0.5, 0.25, 0.25], tasks=["vic", "vim", "rec"]
    )
    draws_a = [a.tasks[a._task_rng.choice(3, p=a.task_probs)] for _ in range(200)]
    draws_b = [b.tasks[b._task_rng.choice(3, p=b.task_probs)] for _ in range(200)]
    assert draws_a == draws_b
    counts = {t: draws_a.count(t) for t in ("vic", "vim", "rec")}
    assert 70 <= counts["vic"] <= 130 and counts["vim"] >= 25 and counts["rec"] >= 25


def test_loss_weights_scale_each_loss():
    plain = tiny_rice().train()
    weighted = tiny_rice(loss_weights={"vim": 0.5, "rec": 2.0}).train()
    weighted.load_state_dict(plain.state_dict())
    batch = tiny_batch()
    a, b = plain(batch)["losses"], weighted(batch)["losses"]
    torch.testing.assert_close(b["vic_loss"], a["vic_loss"])
    torch.testing.assert_close(b["vim_loss"], 0.5 * a["vim_loss"])
    torch.testing.assert_close(b["rec_loss"], 2.0 * a["rec_loss"])


def test_exclude_same_product_keeps_same_image_clips_out_of_the_negatives():
    model = tiny_rice(exclude_same_product=True).eval()
    batch = tiny_batch(batch=6)
    batch["image_id"] = ["a", "b", "a", "c", "b", "d"]
    from mmf.models.rice.mining import same_product_mask

    exclude = same_product_mask(batch["image_id"], 6, torch.device("cpu"))
    assert exclude[0].tolist() == [True, False, True, False, False, False]
    with torch.no_grad():
        image_emb, _ = model.encode_image(batch["image"])
        video_emb, _ = model.encode_video(batch["video"], batch["video_temporal_mask"])
        _, negatives, valid, _ = model.transformer.mine_negatives(image_emb, video_emb, exclude)
    assert valid.all()
    assert 2 not in negatives[0].tolist() and 0 not in negatives[2].tolist()
    assert 4 not in negatives[1].tolist() and 1 not in negatives[4].tolist()
    model.train()
    assert torch.isfinite(model(batch)["losses"]["vim_loss"])


def test_eval_outputs_only_the_views_present(model):
    model.eval()
    batch = tiny_batch()
    with torch.no_grad():
        query = model(
            {"video": batch["video"], "video_temporal_mask": batch["video_temporal_mask"]}
        )
        gallery = model({"image": batch["image"]})
        both = model(batch)
    assert set(query) == {"scores", "losses"} and set(gallery) == {"targets", "losses"}
    torch.testing.assert_close(query["scores"], both["scores"])
    torch.testing.assert_close(gallery["targets"], both["targets"])
    torch.testing.assert_close(gallery["targets"].norm(dim=-1), torch.ones(4))


def test_contrastive_head_trains_vic_with_norm_s():
    model = tiny_rice(
        training_head_type="contrastive", tasks=["vic"], tasks_sample_ratio=[1.0]
    ).train()
    out = model(tiny_batch())
    assert set(out["losses"]) == {"vic_loss"} and not model.has_pair_score
    out["losses"]["vic_loss"].backward()
    assert model.transformer.contrastive_norm.norm_s.grad is not None
    assert model.transformer.logit_scale.grad is None
    with pytest.raises(ConfigError):
        model.pair_score(None, None, None)
    sampled = tiny_rice(
        training_head_type="contrastive", tasks=["vic"], tasks_sample_ratio=[1.0], sample_tasks=True
    )
    sampled.load_state_dict(model.state_dict())
    torch.testing.assert_close(
        sampled.train()(tiny_batch())["losses"]["vic_loss"], out["losses"]["vic_loss"]
    )


def test_rice_follows_a_timm_encoder_token_width():
    model = tiny_rice(
        image_encoder={
            "type": "timm",
            "params": {"model_name": "resnet18", "pretrained_model_name": None},
        }
    )
    assert model.transformer.transformer.config.hidden_size == 512
    assert model.transformer.transformer.config.intermediate_size == 2048
    model.train()
    out = model(tiny_batch(batch=2, frames=2))
    assert set(out["losses"]) == {"vic_loss", "vim_loss", "rec_loss"}


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="training_head_type"):
        tiny_rice(training_head_type="fusion")
    with pytest.raises(ConfigError, match="tasks"):
        tiny_rice(tasks=["vic", "mlm"])
    with pytest.raises(ConfigError, match="tasks_sample_ratio"):
        tiny_rice(tasks_sample_ratio=[1.0])
    with pytest.raises(ConfigError, match="transformer_model.pretrained_model_name.*nope.pt"):
        tiny_rice(transformer_model={"pretrained_model_name": str(tmp_path / "nope.pt")})
    assert np.isclose(tiny_rice(tasks_sample_ratio=[3, 1, 1]).task_probs.sum(), 1.0)
