"""Registry: duplicate names raise, unknown names list the known ones."""
import pytest
from omegaconf import OmegaConf

from mmf.common.errors import ConfigError, UnknownNameError
from mmf.common.registry import Registry
from mmf.utils.build import build_from_type_params


def test_duplicate_name_raises_and_same_class_is_idempotent():
    registry = Registry()

    class First:
        pass

    class Second:
        pass

    registry.register_model("m")(First)
    registry.register_model("m")(First)
    with pytest.raises(ValueError, match="model name 'm' is already registered"):
        registry.register_model("m")(Second)
    assert registry.get_model_class("m") is First and registry.list("model") == ["m"]


def test_unknown_name_lists_known_names():
    registry = Registry()
    registry.register_metric("r@k")(type("RecallAtK", (), {}))
    registry.register_metric("r@k_general")(type("RecallGeneral", (), {}))
    with pytest.raises(
        UnknownNameError,
        match=r"unknown metric 'r@kk'\. Did you mean 'r@k'\? "
        r"Known metrics: \['r@k', 'r@k_general'\]",
    ):
        registry.get_metric_class("r@kk")
    with pytest.raises(KeyError):  # also a KeyError, for callers that expect one
        registry.get("metric", "nope")


def test_build_from_type_params_names_the_config_node():
    with pytest.raises(
        ConfigError, match="evaluation.metrics\\[0\\]: expected a node with a 'type' key"
    ):
        build_from_type_params("metric", OmegaConf.create({"params": {}}), "evaluation.metrics[0]")
    with pytest.raises(
        UnknownNameError, match="training.callbacks\\[1\\].type: unknown callback 'nope'"
    ):
        build_from_type_params(
            "callback", OmegaConf.create({"type": "nope"}), "training.callbacks[1]"
        )
