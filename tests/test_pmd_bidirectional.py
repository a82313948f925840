"""Bidirectional PMD (``pmd_directions: [image, video]``): mining of hard-negative shop images,
the video-direction loss, loss names and weights, config validation, and PFR sharing PMD's
forward of the positive pairs (same losses and gradients as separate passes)."""
import math

import pytest
import torch
import torch.nn.functional as F
from test_rice_model import tiny_batch, tiny_rice

from mmf.common.errors import ConfigError
from mmf.models.rice.heads import embed_image, embed_video
from mmf.models.rice.mining import same_product_mask

BOTH = ["image", "video"]


def _unit(degrees):
    radians = torch.tensor(degrees, dtype=torch.float32) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1)


# Shop images at 0, 30, 60, 90 degrees; clips at 25, 35, 90, 5 degrees (clip i pairs image i).
IMAGES = _unit([0.0, 30.0, 60.0, 90.0])
CLIPS = _unit([25.0, 35.0, 90.0, 5.0])


def test_video_direction_mines_the_nearest_other_shop_images():
    head = tiny_rice(num_negatives=2, pmd_directions=BOTH).transformer
    positive, negatives, valid, dual_accuracy = head.mine_negative_images(CLIPS, IMAGES)
    assert positive.tolist() == [0, 1, 2, 3]
    # Clip 0 (25 deg) is 5 deg from image 1, 35 from image 2, 65 from image 3.
    assert negatives.tolist() == [[1, 2], [2, 0], [3, 1], [0, 1]]
    assert valid.all()
    # Nearest image of each clip: 1, 1, 3, 0; only clip 1's is its own.
    assert dual_accuracy.item() == pytest.approx(0.25)
    # The image direction mines clips for each image instead: image 1 (30 deg) -> clips 0, 3.
    _, clip_negatives, _, _ = head.mine_negatives(IMAGES, CLIPS)
    assert clip_negatives.tolist() == [[3, 1], [0, 3], [1, 0], [2, 1]]


def test_video_direction_excludes_same_product_images_and_pads_missing_slots():
    head = tiny_rice(num_negatives=3, pmd_directions=BOTH).transformer
    exclude = same_product_mask(["a", "b", "a", "c"], 4, torch.device("cpu"))
    _, negatives, valid, _ = head.mine_negative_images(CLIPS, IMAGES, exclude)
    # Clips 0 and 2 show product "a": image 2 is not a negative of clip 0, nor image 0 of clip 2,
    # which leaves them two allowed images for three slots.
    assert negatives[0, :2].tolist() == [1, 3] and negatives[2, :2].tolist() == [3, 1]
    assert valid.tolist() == [[True, True, False], [True, True, True]] * 2
    assert negatives[1].tolist() == [2, 0, 3] and negatives[3].tolist() == [0, 1, 2]


def test_video_direction_loss_is_cross_entropy_over_pair_scores_of_mined_images():
    model = tiny_rice(num_negatives=3, pmd_directions=BOTH).eval()
    head = model.transformer
    batch = tiny_batch(batch=4)
    mask = batch["video_temporal_mask"]
    exclude = same_product_mask(["a", "b", "a", "c"], 4, torch.device("cpu"))
    with torch.no_grad():
        image_emb, image_tokens = model.encode_image(batch["image"])
        video_emb, video_tokens = model.encode_video(batch["video"], mask)
        args = (image_emb, video_emb, image_tokens, video_tokens, mask, exclude)
        loss, metrics = head.pmd_loss(*args, direction="video")
        _, negatives, valid, _ = head.mine_negative_images(video_emb, image_emb, exclude)
        losses = []
        for clip in range(4):
            images = [clip] + negatives[clip][valid[clip]].tolist()
            count = len(images)
            scores = model.pair_score(
                image_tokens[images], video_tokens[[clip] * count], mask[[clip] * count]
            )
            losses.append(-F.log_softmax(scores, dim=0)[0])
        image_loss, _ = head.pmd_loss(*args, direction="image")
    assert not valid.all()  # clips 0 and 2 have only two allowed negatives
    torch.testing.assert_close(loss, torch.stack(losses).mean())
    assert set(metrics) == {"vim_video/dual_accuracy", "vim_video/cross_accuracy"}
    assert not torch.allclose(loss, image_loss)


def test_bidirectional_training_logs_both_directions_and_keeps_the_image_term():
    batch = tiny_batch(batch=4)
    default = tiny_rice().train()
    both = tiny_rice(pmd_directions=BOTH, loss_weights={"vim": 0.5}).train()
    both.load_state_dict(default.state_dict())
    plain, out = default(batch), both(batch)
    assert set(plain["losses"]) == {"vic_loss", "vim_loss", "rec_loss"}
    assert set(out["losses"]) == {"vic_loss", "vim_loss", "vim_video_loss", "rec_loss"}
    assert set(out["train_metrics"]) == {
        "vim/dual_accuracy",
        "vim/cross_accuracy",
        "vim_video/dual_accuracy",
        "vim_video/cross_accuracy",
    }
    for name in ("vic_loss", "rec_loss"):
        torch.testing.assert_close(out["losses"][name], plain["losses"][name])
    # loss_weights.vim weighs both directions.
    torch.testing.assert_close(out["losses"]["vim_loss"], 0.5 * plain["losses"]["vim_loss"])
    video_only = tiny_rice(pmd_directions=["video"]).train()
    video_only.load_state_dict(default.state_dict())
    video_loss = video_only(batch)["losses"]
    assert set(video_loss) == {"vic_loss", "vim_video_loss", "rec_loss"}
    torch.testing.assert_close(out["losses"]["vim_video_loss"], 0.5 * video_loss["vim_video_loss"])
    sum(out["losses"].values()).backward()
    assert torch.isfinite(both.transformer.heads["vim"].weight.grad).all()


@pytest.mark.parametrize("directions", [["image"], BOTH])
def test_pfr_sharing_pmd_positive_pass_gives_the_separate_passes_losses_and_gradients(directions):
    # Dropout 0 (tiny_rice), train mode, float64 (summation order then barely matters): sharing
    # must not change any value.
    model = tiny_rice(pmd_directions=directions).train().double()
    head = model.transformer
    batch = tiny_batch(batch=4)
    mask = batch["video_temporal_mask"]
    with torch.no_grad():
        image_global, image_tokens = model.image_encoder(batch["image"].double())
        video_global, video_tokens = model._encode_frames(batch["video"].double())
    features = (image_global, image_tokens, video_global, video_tokens)
    leaves = [t.clone().requires_grad_() for t in features]

    def run(shared):
        model.zero_grad(set_to_none=True)
        for leaf in leaves:
            leaf.grad = None
        if shared:
            losses, _ = head.training_losses(*leaves, mask, tasks=("vim", "rec"))
        else:  # the pre-sharing path: each PMD direction and PFR run their own passes
            image_emb, video_emb = embed_image(leaves[0]), embed_video(leaves[2], mask)
            losses = {}
            for direction, name in (("image", "vim_loss"), ("video", "vim_video_loss")):
                if direction in directions:
                    losses[name], _ = head.pmd_loss(
                        image_emb, video_emb, leaves[1], leaves[3], mask, direction=direction
                    )
            losses["rec_loss"] = head.pfr_loss(leaves[1], leaves[3], mask)
        sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        # PMD and PFR reach the encoder through the tokens (mining is gradient-free).
        grads["image_tokens"], grads["video_tokens"] = leaves[1].grad, leaves[3].grad
        return {k: v.detach() for k, v in losses.items()}, grads

    shared_losses, shared_grads = run(shared=True)
    separate_losses, separate_grads = run(shared=False)
    assert set(shared_losses) == set(separate_losses)
    for name in shared_losses:
        torch.testing.assert_close(shared_losses[name], separate_losses[name], rtol=1e-12, atol=0)
    assert set(shared_grads) == set(separate_grads)
    for name, grad in separate_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-9, atol=1e-12)


def test_no_negatives_leaves_only_the_positive_column():
    model = tiny_rice(num_negatives=0, pmd_directions=BOTH).train()
    losses = model(tiny_batch(batch=3))["losses"]
    # Cross-entropy over one column is 0, in both directions.
    assert losses["vim_loss"].item() == 0 and losses["vim_video_loss"].item() == 0
    assert losses["rec_loss"].item() > 0


def test_pmd_directions_config_errors():
    for bad in (["image", "text"], [], ["video", "video"], "image"):
        with pytest.raises(ConfigError, match=r"model_config\.rice\.pmd_directions"):
            tiny_rice(pmd_directions=bad)
