"""Released-checkpoint compatibility: the key and shape manifest of original_spec section 7
for both head types (full ViT-B/32, random init), and strict loads of DDP-saved state dicts."""

import pytest
import torch
from omegaconf import OmegaConf

from mmf.utils.build import build_model
from mmf.utils.configuration import load_yaml
from mmf.utils.env import setup_imports


def encoder_manifest():
    keys = {
        "class_embedding": (768,),
        "positional_embedding": (50, 768),
        "proj": (768, 512),
        "conv1.weight": (768, 3, 32, 32),
        "ln_pre.weight": (768,),
        "ln_pre.bias": (768,),
        "ln_post.weight": (768,),
        "ln_post.bias": (768,),
    }
    for i in range(12):
        keys.update({f"transformer.resblocks.{i}.{k}": v for k, v in block_manifest().items()})
    return {"image_encoder.model." + k: v for k, v in keys.items()}


def block_manifest():
    return {
        "attn.in_proj_weight": (2304, 768),
        "attn.in_proj_bias": (2304,),
        "attn.out_proj.weight": (768, 768),
        "attn.out_proj.bias": (768,),
        "ln_1.weight": (768,),
        "ln_1.bias": (768,),
        "mlp.c_fc.weight": (3072, 768),
        "mlp.c_fc.bias": (3072,),
        "mlp.c_proj.weight": (768, 3072),
        "mlp.c_proj.bias": (768,),
        "ln_2.weight": (768,),
        "ln_2.bias": (768,),
    }


def pretraining_manifest(tasks):
    keys = {
        "transformer.logit_scale": (),
        "transformer.transformer.embeddings.class_embedding": (768,),
        "transformer.transformer.embeddings.position_embedding.weight": (50, 768),
        "transformer.transformer.embeddings.layer_norm.weight": (768,),
        "transformer.transformer.embeddings.layer_norm.bias": (768,),
        "transformer.transformer.pooler.layer_norm.weight": (768,),
        "transformer.transformer.pooler.layer_norm.bias": (768,),
        "transformer.transformer.pooler.dense.weight": (768, 768),
    }
    for j in (0, 1):
        keys.update(
            {
                f"transformer.transformer.transformer.layers.{j}.{k}": v
                for k, v in block_manifest().items()
            }
        )
    if "vim" in tasks:
        keys["transformer.heads.vim.weight"] = (1, 768)
    if "rec" in tasks:
        keys.update(
            {
                "transformer.heads.rec.0.weight": (4, 8, 1, 1),
                "transformer.heads.rec.0.bias": (4,),
                "transformer.heads.rec.2.weight": (1, 4, 1, 1),
                "transformer.heads.rec.2.bias": (1,),
            }
        )
    return keys


def rice_config(**overrides):
    setup_imports()
    base = load_yaml("mmf/configs/models/rice/defaults.yaml").model_config.rice
    return OmegaConf.merge(base, {"model": "rice"}, overrides)


@pytest.fixture(scope="module")
def full_model():
    """ViT-B/32 RICE with every head (built once; the other variants reuse its encoder)."""
    torch.manual_seed(0)
    return build_model(rice_config(tasks=["vic", "vim", "rec"], tasks_sample_ratio=[0.6, 0.2, 0.2]))


def _shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def test_pretraining_manifest_vic_vim_rec(full_model):
    expected = dict(encoder_manifest(), **pretraining_manifest(["vic", "vim", "rec"]))
    assert _shapes(full_model.state_dict()) == expected


@pytest.mark.parametrize(
    "head,tasks",
    [("pretraining", ["vic"]), ("pretraining", ["vic", "vim"]), ("contrastive", ["vic"])],
)
def test_head_manifests(full_model, head, tasks):
    config = rice_config(training_head_type=head, tasks=tasks, tasks_sample_ratio=None)
    from mmf.models.rice.heads import RICEForContrastive
    from mmf.models.rice.pretraining import RICEForPretraining

    head_module = (
        RICEForContrastive(config) if head == "contrastive" else RICEForPretraining(config, 768)
    )
    state = {"transformer." + k: v for k, v in head_module.state_dict().items()}
    if head == "contrastive":
        expected = {"transformer.logit_scale": (), "transformer.contrastive_norm.norm_s": (1,)}
    else:
        expected = pretraining_manifest(tasks)
    assert _shapes(state) == expected


def test_contrastive_model_manifest_and_initial_scales(full_model):
    model = build_model(
        rice_config(
            training_head_type="contrastive",
            image_encoder={"type": "identity", "params": {"in_dim": 768}},
        )
    )
    state = model.state_dict()
    assert _shapes(state) == {
        "transformer.logit_scale": (),
        "transformer.contrastive_norm.norm_s": (1,),
    }
    assert state["transformer.contrastive_norm.norm_s"].item() == 4.0
    assert full_model.state_dict()["transformer.logit_scale"].item() == 4.0


def test_ddp_prefixed_state_dict_loads_strictly(full_model):
    state = full_model.state_dict()
    changed = [
        "transformer.logit_scale",
        "image_encoder.model.conv1.weight",
        "transformer.heads.vim.weight",
    ]
    original = {k: state[k].clone() for k in changed}
    saved = {"module." + k: (v + 0.5 if k in changed else v) for k, v in state.items()}
    try:
        full_model.load_state_dict(saved, strict=True)
        for key in changed:
            assert torch.equal(full_model.state_dict()[key], original[key] + 0.5), key
    finally:
        full_model.load_state_dict(original, strict=False)
    assert torch.equal(
        full_model.state_dict()["transformer.logit_scale"], original["transformer.logit_scale"]
    )
    with pytest.raises(RuntimeError, match="Missing key"):
        full_model.load_state_dict(
            {k: v for k, v in original.items() if k != "transformer.logit_scale"}
        )
    assert (
        full_model.format_state_key("module.transformer.logit_scale") == "transformer.logit_scale"
    )
    assert full_model.format_state_key("transformer.logit_scale") == "transformer.logit_scale"


def test_rec_head_initial_weights(full_model):
    rec = full_model.transformer.heads["rec"]
    assert torch.all(rec[0].weight == 1) and torch.all(rec[2].weight == 1)
    assert torch.all(rec[0].bias == 0) and torch.all(rec[2].bias == 0)
