"""Configuration layers, includes, command-line overrides, environment variables and the
keys of the original RICE configs."""
import pytest
import yaml
from omegaconf import OmegaConf
from toy_helpers import TOY_DIR, TRAIN_YAML, toy_opts, train_toy

from mmf.common.errors import ConfigError
from mmf.utils.configuration import (
    Configuration,
    compat_files,
    get_mmf_root,
    load_config,
    load_yaml,
    parse_value,
)


def _config(tmp_path, *extra, config=TRAIN_YAML):
    opts = toy_opts(tmp_path, *extra)
    opts[0] = f"config={config}"
    return Configuration(opts).get_config()


def test_layers_and_includes(tmp_path):
    config = _config(tmp_path)
    assert config.training.num_workers == 0  # user yaml beats framework defaults
    assert config.model_config.toy_mlp.hidden_dim == 32  # model defaults (config_path)
    assert config.dataset_config.toy.num_samples.train == 64  # dataset defaults
    assert config.optimizer.type == "adam_w"  # from base.yaml, included relative to train.yaml
    assert config.training.trainer == "mmf" and config.datasets == "toy"
    user = tmp_path / "user.yaml"
    user.write_text(f"includes:\n- {TRAIN_YAML}\nmodel_config:\n  toy_mlp:\n    hidden_dim: 4\n")
    assert _config(tmp_path, config=user).model_config.toy_mlp.hidden_dim == 4


def test_command_line_overrides(tmp_path):
    config = _config(
        tmp_path,
        "optimizer.params.betas[1]=0.95",
        "evaluation.metrics[0].type=other",
        "training.max_epochs=3",
        "training.seed=None",
        "training.experiment_name=exp one",
        "dataset_config.toy.processors.feature_processor.params={'std': 0.5}",
    )
    assert list(config.optimizer.params.betas) == [0.9, 0.95]
    assert config.evaluation.metrics[0].type == "other"
    assert config.training.max_epochs == 3 and config.training.seed is None
    assert config.env.save_dir == str(tmp_path)  # explicit env.save_dir wins
    assert config.training.experiment_name == "exp one"
    assert config.dataset_config.toy.processors.feature_processor.params.std == 0.5
    assert [parse_value(v) for v in ("1e-4", "true", "null", "[1, 2]", "abc")] == [
        1e-4,
        True,
        None,
        [1, 2],
        "abc",
    ]


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.batch_sise=4", "unknown config key 'training.batch_sise'"),
        ("optimizer.params.betas[5]=0.1", "index 5 is out of range"),
        ("training[0]=1", "not a list at index"),
        ("novalue", "not of the form key=value"),
    ],
)
def test_bad_overrides_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        _config(tmp_path, override)


def test_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("MMF_SAVE_DIR", str(tmp_path / "saves"))
    monkeypatch.setenv("MMF_DATA_DIR", str(tmp_path / "data"))
    opts = [f"config={TRAIN_YAML}", "model=toy_mlp", "dataset=toy", f"env.user_dir={TOY_DIR}"]
    config = Configuration(opts).get_config()
    assert config.env.save_dir == str(tmp_path / "saves" / "toy")
    assert config.env.data_dir == str(tmp_path / "data")
    monkeypatch.setenv("MMF_USER_DIR", str(TOY_DIR))
    assert Configuration(opts[:3]).get_config().model == "toy_mlp"


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: nothing.yaml"):
        load_yaml("nothing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: 1\nb: [1, 2\n")
    with pytest.raises(ConfigError, match=f"malformed YAML in {broken}:3"):
        load_yaml(broken)
    including = tmp_path / "including.yaml"
    including.write_text("includes:\n- missing_include.yaml\n")
    with pytest.raises(ConfigError, match="missing_include.yaml \\(included from"):
        load_yaml(including)


def test_saved_config_round_trips(tmp_path):
    train_toy(tmp_path, "run_type=train", "training.max_updates=1")
    saved = load_config(tmp_path / "config.yaml")
    assert saved.env.save_dir == str(tmp_path) and saved.model == "toy_mlp"
    assert "${" not in OmegaConf.to_yaml(saved)  # fully resolved


FORK_STYLE = """
includes:
- {train}
model_config:
  toy_mlp:
    no_sharing: false
    image_tokenizer:
      type: vqvae_encoder
      params:
        pretrained_path: ${{env.data_dir}}/pretrained_models/vqvae.pth
        attn_resolutions: [7]
    bert_model_dir: pretrained/bert-base-uncased
    tasks: [vic, vim]
    tasks_sample_ratio: [0.6, 0.4]
evaluation:
  metrics:
  - type: toy_accuracy
distributed:
    backend: nccl # nccl, gloo
    debug: false
training:
  experiment_name: lpr_rice_vic_vim
  fp16: true
  lr_scheduler: true
  logger_level: info
  clip_gradients: false
  max_grad_l2_norm: null
  tensorboard: false
  evaluation_interval: 9999999999
  find_unused_parameters: true
  early_stop:
    criteria: fashionall/r@k_general/avg
    minimize: false
  wandb:
    enabled: false
    entity: hokkien-ywj
    project: multimodal-fashion
run_type: train_val
"""


def test_original_config_keys_are_tolerated(tmp_path, caplog):
    experiment = tmp_path / "fork_style.yaml"
    experiment.write_text(FORK_STYLE.format(train=TRAIN_YAML))
    opts = toy_opts(tmp_path / "fork", "training.max_updates=2")
    opts[0] = f"config={experiment}"
    from mmf.trainers.mmf_trainer import MMFTrainer

    trainer = MMFTrainer(Configuration(opts).get_config()).load()
    trainer.train()
    # fp16 on CPU trains in fp32; the wrong early-stop dataset only warns (not enabled).
    assert trainer.state.num_updates == 2 and trainer.autocast_dtype is None
    assert "early_stop.criteria 'fashionall/r@k_general/avg' is not among" in caplog.text


def _dotted_leaves(node, prefix=""):
    """{dotted key: value} of the scalars, lists and empty mappings of a plain mapping."""
    out = {}
    for name, child in node.items():
        if isinstance(child, dict) and child:
            out.update(_dotted_leaves(child, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = child
    return out


def _changed_value(default):
    """A command-line value of the same kind as ``default`` that differs from it."""
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, (int, float)):
        return repr(default + 1)
    if isinstance(default, list):
        return "[7]"
    if isinstance(default, dict):
        return "{'a': 1}"
    return "changed"


def test_compat_keys_stay_loadable_and_warn_once_each(tmp_path, caplog, monkeypatch):
    base = ["model=rice", "dataset=videotoshop", f"env.save_dir={tmp_path}"]
    # Interpolated defaults resolve against the run: no warning for them.
    monkeypatch.setenv("MMF_LOG_DIR", str(tmp_path / "logs"))
    with caplog.at_level("WARNING"):
        config = Configuration(base + ["training.experiment_name=other"]).get_config()
    assert config.training.wandb.name == "other" and config.env.log_dir == str(tmp_path / "logs")
    assert "has no effect" not in caplog.text
    files = [p.relative_to(get_mmf_root()).as_posix() for p in compat_files()]
    assert files == [
        "configs/compatibility.yaml",
        "configs/datasets/movingfashion/compatibility.yaml",
        "configs/datasets/videotoshop/compatibility.yaml",
        "configs/models/rice/compatibility.yaml",
    ]

    keys = {}
    for path in compat_files():
        if "movingfashion" not in str(path):
            keys.update(_dotted_leaves(OmegaConf.to_container(load_yaml(path))))
    assert "training.log_format" in keys and "model_config.rice.task_for_inference" in keys
    assert "dataset_config.videotoshop.use_images" in keys and "start_rank" in keys
    caplog.clear()
    with caplog.at_level("WARNING"):
        Configuration(base + [f"{key}={_changed_value(value)}" for key, value in keys.items()])
    messages = [record.getMessage() for record in caplog.records]
    warned = [message.split()[2] for message in messages if "has no effect" in message]
    assert sorted(warned) == sorted(keys)  # every key once, and nothing else
    assert "configs/models/rice/compatibility.yaml" in caplog.text


def test_compat_keys_are_part_of_the_defaults_beside_them():
    """Each compatibility.yaml is included by its defaults.yaml and holds the only copy of
    its keys."""
    for path in compat_files():
        compat = OmegaConf.to_container(load_yaml(path))
        defaults = OmegaConf.to_container(load_yaml(path.parent / "defaults.yaml"))
        assert OmegaConf.to_container(OmegaConf.merge(defaults, compat)) == defaults, path
        body = yaml.safe_load((path.parent / "defaults.yaml").read_text())
        for key in _dotted_leaves(compat):
            node = body
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            assert node is None, f"{key} is in {path.parent / 'defaults.yaml'} as well"
