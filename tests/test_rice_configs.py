"""The six project configs keep the original values (original_spec 4.2) and data paths go
through env.data_dir (MMF_DATA_DIR); the authors' own files of the six load to the same
values and train."""
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from mmf.models.rice.rice import RICE
from mmf.utils.configuration import Configuration, get_mmf_root, load_yaml

VARIANTS = {
    # (dataset, variant): (head, tasks, ratios, lr, betas)
    ("videotoshop", "vic"): ("contrastive", ["vic"], [1.0], 1e-6, None),
    ("videotoshop", "vic_vim"): ("pretraining", ["vic", "vim"], [0.6, 0.4], 1e-6, None),
    ("videotoshop", "vic_vim_rec"): (
        "pretraining", ["vic", "vim", "rec"], [0.6, 0.2, 0.2], 1e-6, None
    ),
    ("movingfashion", "vic"): ("pretraining", ["vic"], [1.0], 1e-6, [0.9, 0.98]),
    ("movingfashion", "vic_vim"): ("pretraining", ["vic", "vim"], [0.6, 0.4], 1e-6, [0.9, 0.98]),
    ("movingfashion", "vic_vim_rec"): (
        "pretraining", ["vic", "vim", "rec"], [0.6, 0.2, 0.2], 1e-6, [0.9, 0.98]
    ),
}


@pytest.mark.parametrize("dataset,variant", sorted(VARIANTS))
def test_project_config_values(dataset, variant):
    head, tasks, ratios, lr, betas = VARIANTS[(dataset, variant)]
    path = _project_file(dataset, variant)
    defaults = load_yaml(get_mmf_root() / "configs" / "defaults.yaml")
    config = OmegaConf.merge(defaults, load_yaml(path))
    rice = config.model_config.rice
    _check_model(rice, head, tasks, ratios)
    _check_optimization(config, lr, betas)
    _check_training(config.training, dataset, variant)
    assert config.run_type == "train_val"
    raw = OmegaConf.to_container(load_yaml(path))
    data_dir = raw["dataset_config"][dataset]["data_dir"]
    assert data_dir.startswith("${env.data_dir}/")
    RICE(rice)  # the merged node passes the model's config checks


def _check_model(rice, head, tasks, ratios):
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


def _check_optimization(config, lr, betas):
    optimizer = config.optimizer
    assert optimizer.type == "adam_w"
    assert optimizer.params.lr == pytest.approx(lr)
    assert optimizer.params.eps == pytest.approx(1e-6)
    assert optimizer.params.weight_decay == pytest.approx(0.2)
    assert (list(optimizer.params.betas) if "betas" in optimizer.params else None) == betas
    assert config.scheduler.type == "warmup_cosine"
    assert dict(config.scheduler.params) == {"num_warmup_steps": 500, "num_training_steps": 5000}


def _check_training(training, dataset, variant):
    prefix = "lpr" if dataset == "videotoshop" else "mf"
    assert training.experiment_name == f"{prefix}_rice_{variant}"
    counts = (training.batch_size, training.max_updates, training.checkpoint_interval)
    assert counts == (96, 5000, 2000)
    assert training.fp16 and training.lr_scheduler and training.find_unused_parameters
    assert training.num_workers == 8 and training.log_interval == 1


def test_model_defaults_reproduce_the_original():
    path = get_mmf_root() / "configs" / "models" / "rice" / "defaults.yaml"
    rice = load_yaml(path).model_config.rice
    assert rice.training_head_type == "pretraining"
    cross = rice.transformer_model
    eps = (cross.layer_norm_eps, cross.self_attention_layer_norm_eps)
    assert (cross.num_attention_heads, *eps) == (8, 1e-5, 1e-12)
    assert (cross.hidden_size, cross.intermediate_size, cross.num_hidden_layers) == (768, 3072, 1)
    assert cross.attention_probs_dropout_prob == 0.1
    assert rice.num_negatives == 3 and rice.pmd_chunk_size == 2
    assert not rice.sample_tasks and not rice.exclude_same_product and not rice.pfr_mask_padding


# The authors' own files (tests/fixtures/authors_configs): `1e-6`, inline comments, trailing
# spaces, dead keys and their absolute data path, as the original repository writes them.
AUTHORS = get_mmf_root().parent / "tests" / "fixtures" / "authors_configs"
TINY_ENCODER = "{image_size: 32, patch_size: 8, width: 64, layers: 2, heads: 4, output_dim: 32}"


def _authors_file(dataset, variant):
    return AUTHORS / dataset / f"e2e_pretraining_{variant}.yaml"


def _project_file(dataset, variant):
    folder = get_mmf_root().parent / "projects" / dataset / "configs"
    return folder / f"e2e_pretraining_{variant}.yaml"


@pytest.mark.parametrize("dataset,variant", sorted(VARIANTS))
def test_authors_files_load_as_the_project_copies(dataset, variant):
    text = _authors_file(dataset, variant).read_text()
    assert "lr: 1e-6\n" in text and "eps: 1e-6\n" in text and "fp16: true\n" in text
    assert "batch_size: 96 # global batch size\n" in text
    assert "default=4 \n" in text  # a trailing space
    params = load_yaml(_authors_file(dataset, variant)).optimizer.params
    assert type(params.lr) is float and params.lr == 1e-6 and type(params.eps) is float

    def built(path):
        config = Configuration([f"config={path}", "model=rice", f"dataset={dataset}"]).get_config()
        plain = OmegaConf.to_container(config)
        del plain["config"], plain["dataset_config"][dataset]["data_dir"]
        return plain

    authors = built(_authors_file(dataset, variant))
    project = built(_project_file(dataset, variant))
    for section in ("optimizer", "scheduler", "model_config", "training", "run_type"):
        assert authors[section] == project[section], section
    processors = [c["dataset_config"][dataset]["processors"] for c in (authors, project)]
    assert processors[0] == processors[1]
    assert authors == project


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory):
    from test_datasets import write_lpr_dataset, write_movingfashion

    roots = {name: tmp_path_factory.mktemp(name) for name in ("videotoshop", "movingfashion")}
    write_lpr_dataset(roots["videotoshop"])
    write_movingfashion(roots["movingfashion"])
    return roots


def _tiny_run_opts(dataset, root, save_dir):
    """Command-line options that train an authors' config on the fixture data, fast on CPU."""
    opts = [
        "model=rice", f"dataset={dataset}", "run_type=train", f"env.save_dir={save_dir}",
        f"dataset_config.{dataset}.data_dir={root}",
        f"model_config.rice.image_encoder.params={TINY_ENCODER}",
        "training.batch_size=2", "training.num_workers=0", "training.max_updates=2",
        "training.tensorboard=false", "training.progress_bar=false",
    ]
    if dataset == "videotoshop":
        opts.append(f"dataset_config.{dataset}.annotations.train=[annotations/train_lpr4m.txt]")
    for name in ("train_image_processor", "eval_image_processor"):
        transforms = f"dataset_config.{dataset}.processors.{name}.params.transforms"
        opts += [f"{transforms}[0].params.size=[36, 36]", f"{transforms}[1].params.size=[32, 32]"]
    return opts


@pytest.mark.parametrize("dataset,variant", sorted(VARIANTS))
def test_authors_files_train_two_updates(dataset, variant, fixture_data, tmp_path):
    from mmf.trainers.mmf_trainer import MMFTrainer

    opts = [
        f"config={_authors_file(dataset, variant)}",
        *_tiny_run_opts(dataset, fixture_data[dataset], tmp_path),
    ]
    if VARIANTS[(dataset, variant)][0] == "pretraining":
        opts.append("model_config.rice.transformer_model.pretrained_model_name=null")
    config = Configuration(opts).get_config()
    assert config.dataset_config[dataset].annotations.train[0].startswith("annotations/")
    trainer = MMFTrainer(config).load()
    trainer.train()
    assert trainer.state.num_updates == 2
    groups = trainer.optimizer.param_groups
    lrs = sorted({group["initial_lr"] for group in groups})  # lr and lr * lr_multiplier
    assert lrs == pytest.approx([1e-6, 1e-4], rel=1e-9)
    assert (tmp_path / "rice_final.pth").is_file()


PYTHON_API = """
import torch
from mmf.utils.build import build_model
from mmf.utils.configuration import load_config

model = build_model(load_config("{save}/config.yaml"))
model.load_state_dict(torch.load("{save}/rice_final.pth", weights_only=True))
print(sum(float(p.double().sum()) for p in model.state_dict().values()))
"""


def test_released_config_trains_evaluates_and_builds_from_python(fixture_data, tmp_path):
    """A config.yaml saved by the original MMF (every upstream key, resolved) trains as it is;
    the run's own config.yaml gives the model back in a fresh Python in three lines."""
    from toy_helpers import subprocess_env

    from mmf.evaluation.loading import load_eval_config
    from mmf.trainers.mmf_trainer import MMFTrainer

    released = AUTHORS / "released_lpr_rice_vic_vim_rec.yaml"
    root = fixture_data["videotoshop"]
    config, name = load_eval_config(str(released), None, data_dir=str(root))
    assert name == "videotoshop" and config.model_config.rice.tasks == ["vic", "vim", "rec"]

    opts = [f"config={released}", *_tiny_run_opts("videotoshop", root, tmp_path)]
    opts.append("model_config.rice.transformer_model.pretrained_model_name=null")
    trainer = MMFTrainer(Configuration(opts).get_config()).load()
    trainer.train()
    assert trainer.state.num_updates == 2
    expected = sum(float(p.double().sum()) for p in trainer.model.state_dict().values())

    result = subprocess.run(
        [sys.executable, "-c", PYTHON_API.format(save=tmp_path)], cwd=tmp_path,
        env=subprocess_env(PYTHONPATH=str(get_mmf_root().parent)), capture_output=True,
        text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip()) == pytest.approx(expected, rel=1e-12)
