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


# Part B of issue 14: each mistake is one line from mmf_cli/run.py (exit 1), never a traceback
# or a silent run. The yaml cases write an experiment file on top of the toy project.
def _cli_error(tmp_path, capsys, yaml_text="", extra=()):
    from mmf_cli.run import run

    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(f"includes:\n- {TRAIN_YAML}\n{yaml_text}")
    opts = toy_opts(tmp_path / "save", "run_type=train", *extra)
    opts[0] = f"config={experiment}"
    with pytest.raises(SystemExit) as exit_info:
        run(opts)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and len(lines) == 1, lines
    assert not (tmp_path / "save" / "current.ckpt").exists()
    return lines[0].replace(str(experiment), "<experiment>")


@pytest.mark.parametrize(
    "yaml_text, extra, line",
    [
        (
            "training:\n  batch_size: 4\ntraining:\n  max_updates: 2\n", (),
            "duplicate key 'training' in <experiment>:5 (a second block would replace the first)",
        ),
        (
            "training:\n  bach_size: 4\n", (),
            "unknown config key in <experiment> or its includes: 'training.bach_size' "
            "(did you mean 'training.batch_size'?)",
        ),
        (
            "checkpoint:\n  max_to_keep: 1\n  resume_fiel: a.ckpt\n", (),
            "unknown config key in <experiment> or its includes: 'checkpoint.resume_fiel' "
            "(did you mean 'checkpoint.resume_file'?)",
        ),
        (
            "optimizer:\n  params:\n    weight_decy: 0.1\n", (),
            "unknown config key 'optimizer.params.weight_decy' (did you mean "
            "'optimizer.params.weight_decay'?): optimizer 'adam_w' takes ['amsgrad', 'betas', "
            "'capturable', 'differentiable', 'eps', 'foreach', 'fused', 'lr', 'maximize', "
            "'weight_decay']",
        ),
        (
            "optimizer:\n  params:\n    lr: 1e-3x\n", (),
            "config key optimizer.params.lr must be a finite number, got '1e-3x'",
        ),
        (
            "training:\n  batch_size: eight\n", (),
            "config key training.batch_size must be an integer, got 'eight'",
        ),
        ("", ("run_type=trian",), "run_type 'trian' is not a combination of train, val, inference, "
         "test joined by '_' (e.g. train_val_inference)"),
        ("training:\n  max_updates: -5\n", (),
         "config key training.max_updates must be >= 0, got -5"),
        ("", ("training.num_workers=-1",),
         "config key training.num_workers must be >= 0, got -1"),
        ("", ("training.device=gpu",),
         "training.device must be cpu, cuda or cuda:<index>, got 'gpu'"),
        ("", ("training.seed=[1",), "command-line value training.seed=[1 is not valid YAML (did "
         "not find expected ',' or ']'); quote a literal string: training.seed=\"'...'\""),
        ("", ("training.bach_size=4",), "unknown config key 'training.bach_size': no config layer "
         "defines it (new keys can come from yaml files, not from the command line)"),
    ],
)
def test_config_mistakes_are_one_line(tmp_path, capsys, yaml_text, extra, line):
    assert _cli_error(tmp_path, capsys, yaml_text, extra) == f"mmf_run: error: {line}"


def test_negative_num_negatives_is_one_line():
    from test_rice_model import tiny_rice

    message = r"^model_config.rice.num_negatives must be an integer >= 0, got -1$"
    with pytest.raises(ConfigError, match=message):
        tiny_rice(num_negatives=-1)


def test_yaml_and_command_line_values_read_as_omegaconf_reads_them(tmp_path):
    path = tmp_path / "authors.yaml"
    path.write_text("optimizer:\n  params:\n    lr: 1e-6  # as the authors write\n    eps: 5e-5 \n")
    params = load_yaml(path).optimizer.params
    assert (params.lr, params.eps) == (1e-6, 5e-5) and type(params.lr) is float
    config = _config(
        tmp_path,
        "optimizer.params.lr=1e-6",
        "training.lr_steps=[annotations/x.txt, 2]",
        "checkpoint.resume_file=null",
        "training.experiment_name='8'",
        "evaluation.metrics[0].params.extra_fields=[]",
    )
    assert config.optimizer.params.lr == 1e-6 and type(config.optimizer.params.lr) is float
    assert list(config.training.lr_steps) == ["annotations/x.txt", 2]
    assert config.checkpoint.resume_file is None and config.training.experiment_name == "8"
    assert [parse_value(v) for v in ("None", "", "~", "[a/b.txt]", "{a: 1}")] == [
        None, None, None, ["a/b.txt"], {"a": 1},
    ]


def test_evaluation_warns_where_training_refuses(caplog):
    from mmf.utils.config_checks import check_known_keys

    defaults = OmegaConf.to_container(load_yaml(get_mmf_root() / "configs" / "defaults.yaml"))
    saved = {"training": {"bach_size": 4}, "trainer": {"params": {"gpus": 8}}}
    with caplog.at_level("WARNING"):
        check_known_keys(saved, defaults, strict=False)
    assert "unknown config key: 'training.bach_size' (did you mean 'training.batch_size'?); " \
           "ignored" in caplog.text
    with pytest.raises(ConfigError, match="training.bach_size"):
        check_known_keys(saved, defaults)
