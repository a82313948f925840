"""The six project configs keep the original values (original_spec 4.2) and data paths go
through env.data_dir (MMF_DATA_DIR)."""
import pytest
from omegaconf import OmegaConf

from mmf.models.rice.rice import RICE
from mmf.utils.configuration import get_mmf_root, load_yaml

VARIANTS = {
    # (dataset, variant): (head, tasks, ratios, lr, betas)
    ("videotoshop", "vic"): ("contrastive", ["vic"], [1.0], 1e-6, None),
    ("videotoshop", "vic_vim"): ("pretraining", ["vic", "vim"], [0.6, 0.4], 1e-6, None),
    ("videotoshop", "vic_vim_rec"): ("pretraining", ["vic", "vim", "rec"], [0.6, 0.2, 0.2], 1e-6, None),
    ("movingfashion", "vic"): ("pretraining", ["vic"], [1.0], 1e-5, [0.9, 0.98]),
    ("movingfashion", "vic_vim"): ("pretraining", ["vic", "vim"], [0.6, 0.4], 1e-5, [0.9, 0.98]),
    ("movingfashion", "vic_vim_rec"): ("pretraining", ["vic", "vim", "rec"], [0.6, 0.2, 0.2], 1e-5, [0.9, 0.98]),
}


@pytest.mark.parametrize("dataset,variant", sorted(VARIANTS))
def test_project_config_values(dataset, variant):
    head, tasks, ratios, lr, betas = VARIANTS[(dataset, variant)]
    path = get_mmf_root().parent / "projects" / dataset / "configs" / f"e2e_pretraining_{variant}.yaml"
    config = OmegaConf.merge(load_yaml(get_mmf_root() / "configs" / "defaults.yaml"), load_yaml(path))
    rice = config.model_config.rice
    assert rice.training_head_type == head
    assert list(rice.tasks) == tasks and list(rice.tasks_sample_ratio) == ratios
    assert rice.lr_multiplier == 100 and rice.task_for_inference == "vic"
    assert rice.freeze_image_encoder is False
    assert rice.image_encoder.type == "openai_clip"
    assert rice.image_encoder.params.pretrained_model_name == "pretrained/ViT-B-32.pt"
    if head == "pretraining":
        cross = rice.transformer_model
        assert cross.pretrained_model_name == "pretrained/ViT-B-32.pt"
        assert cross.num_hidden_layers == 1 and cross.max_position_embeddings == 50
        assert cross.num_attention_heads == 8 and cross.hidden_size == 768
    # Opt-in fixes stay off: the original behaviour.
    assert not rice.sample_tasks and not rice.exclude_same_product and not rice.pfr_mask_padding
    assert rice.num_negatives == 3 and dict(rice.loss_weights) == {}
    optimizer = config.optimizer
    assert optimizer.type == "adam_w"
    assert optimizer.params.lr == pytest.approx(lr)
    assert optimizer.params.eps == pytest.approx(1e-6) and optimizer.params.weight_decay == pytest.approx(0.2)
    assert (list(optimizer.params.betas) if "betas" in optimizer.params else None) == betas
    assert config.scheduler.type == "warmup_cosine"
    assert dict(config.scheduler.params) == {"num_warmup_steps": 500, "num_training_steps": 5000}
    training = config.training
    prefix = "lpr" if dataset == "videotoshop" else "mf"
    assert training.experiment_name == f"{prefix}_rice_{variant}"
    assert (training.batch_size, training.max_updates, training.checkpoint_interval) == (96, 5000, 2000)
    assert training.fp16 and training.lr_scheduler and training.find_unused_parameters
    assert training.num_workers == 8 and training.log_interval == 1
    assert config.run_type == "train_val"
    raw = OmegaConf.to_container(load_yaml(path))
    data_dir = raw["dataset_config"][dataset]["data_dir"]
    assert data_dir.startswith("${env.data_dir}/")
    RICE(rice)  # the merged node passes the model's config checks


def test_model_defaults_reproduce_the_original():
    rice = load_yaml(get_mmf_root() / "configs" / "models" / "rice" / "defaults.yaml").model_config.rice
    assert rice.training_head_type == "pretraining"
    cross = rice.transformer_model
    assert (cross.num_attention_heads, cross.layer_norm_eps, cross.self_attention_layer_norm_eps) == (8, 1e-5, 1e-12)
    assert (cross.hidden_size, cross.intermediate_size, cross.num_hidden_layers) == (768, 3072, 1)
    assert cross.attention_probs_dropout_prob == 0.1
    assert rice.num_negatives == 3 and rice.pmd_chunk_size == 2
    assert not rice.sample_tasks and not rice.exclude_same_product and not rice.pfr_mask_padding
