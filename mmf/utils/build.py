"""Builders that turn ``{type, params}`` config nodes into objects through the registry."""
import inspect

from omegaconf import DictConfig, OmegaConf

from mmf.common.errors import ConfigError
from mmf.common.registry import registry


def build_from_type_params(kind, config, where, **extra):
    """Build ``registry.get(kind, config.type)(config.params, **extra)``.

    ``where`` names the config node (for example ``dataset_config.videotoshop.processors.x``)
    so that a missing ``type`` or an unknown name says which key is wrong. ``extra`` keyword
    arguments are passed only if the class's constructor accepts them.
    """
    if config is None or not hasattr(config, "get") or not config.get("type"):
        raise ConfigError(f"{where}: expected a node with a 'type' key, got {config!r}")
    try:
        cls = registry.get(kind, config.type)
    except ConfigError as err:
        raise type(err)(f"{where}.type: {err}") from None
    params = config.get("params")
    if params is None:
        params = OmegaConf.create({})
    elif not isinstance(params, DictConfig):
        params = OmegaConf.create(params)
    return cls(params, **_accepted_kwargs(cls, extra))


def _accepted_kwargs(cls, extra):
    if not extra:
        return {}
    signature = inspect.signature(cls.__init__)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return dict(extra)
    return {k: v for k, v in extra.items() if k in signature.parameters}


def build_processors(processors_config, where="processors", **extra):
    """``{key: {type, params}}`` -> ``{key: processor}``."""
    return {
        key: build_from_type_params("processor", cfg, f"{where}.{key}", **extra)
        for key, cfg in processors_config.items()
    }


def build_encoder(config, where="encoder", **extra):
    return build_from_type_params("encoder", config, where, **extra)


build_image_encoder = build_encoder


def build_model(config):
    """Build and ``build()`` the model named ``config.model`` from its own config node."""
    model_class = registry.get_model_class(config.model)
    model = model_class(config)
    model.build()
    model.init_losses()
    return model
