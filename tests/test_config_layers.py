"""One config layering and one processor policy for training and evaluation."""
import logging

import pytest
import yaml
from omegaconf import OmegaConf
from toy_helpers import TRAIN_YAML, toy_opts

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.evaluation.loading import load_eval_config
from mmf.utils.configuration import Configuration, component_layers, get_mmf_root, load_yaml
from mmf.utils.env import setup_imports


def test_component_layers_in_merge_order():
    setup_imports()
    layers = component_layers("rice", ["videotoshop", "movingfashion"])
    assert len(layers) == 4
    assert layers[0] == load_yaml(get_mmf_root() / "configs" / "defaults.yaml")
    assert "rice" in layers[1].model_config
    assert list(layers[2].dataset_config) == ["videotoshop"]
    assert list(layers[3].dataset_config) == ["movingfashion"]
    assert len(component_layers(None, [])) == 1


def _toy_with_processor(tmp_path, kind):
    user = tmp_path / "user.yaml"
    user.write_text(
        f"includes:\n- {TRAIN_YAML}\n"
        f"dataset_config:\n  toy:\n    processors:\n      text_processor:\n        type: {kind}\n"
    )
    opts = toy_opts(tmp_path)
    opts[0] = f"config={user}"
    return opts


def test_training_drops_original_mmf_processors_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mmf.utils.configuration"):
        config = Configuration(_toy_with_processor(tmp_path, "masked_bert_tokenizer")).get_config()
    assert list(config.dataset_config.toy.processors) == ["feature_processor"]
    assert "dataset_config.toy.processors.text_processor" in caplog.text
    assert "masked_bert_tokenizer" in caplog.text


def test_other_unregistered_processors_fail_in_training_and_evaluation(tmp_path):
    config = Configuration(_toy_with_processor(tmp_path, "blurr")).get_config()
    assert config.dataset_config.toy.processors.text_processor.type == "blurr"  # kept: it fails
    builder = registry.get_builder_class("toy")()
    with pytest.raises(ConfigError, match="text_processor.type: unknown processor 'blurr'"):
        builder.load_dataset(config.dataset_config.toy, "train")

    # Evaluation reads the saved run config with the same policy.
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(OmegaConf.to_container(config)))
    config, name = load_eval_config(str(saved), "toy")
    assert name == "toy" and config.dataset_config.toy.processors.text_processor.type == "blurr"
    saved.write_text(saved.read_text().replace("type: blurr", "type: masked_token"))
    config, _ = load_eval_config(str(saved), "toy")
    assert list(config.dataset_config.toy.processors) == ["feature_processor"]
