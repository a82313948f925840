"""Builders that turn config nodes into objects: components through the registry
(``{type, params}``), optimizer, scheduler, data loaders and the trainer.

Each builder imports the built-in component packages (``mmf.utils.env.setup_imports``)
before it looks a name up, so they work in a fresh Python session::

    model = build_model(load_config("save/mf_rice_vic/config.yaml"))
"""
import inspect

import torch
from omegaconf import DictConfig, OmegaConf

from mmf.common.errors import ConfigError, UnknownNameError
from mmf.common.registry import registry
from mmf.utils.distributed import get_rank, get_world_size
from mmf.utils.env import setup_imports
from mmf.utils.general import get_batch_size
from mmf.utils.samplers import (
    ResumableDistributedSampler,
    SeededSamples,
    ShardSampler,
    ignore_interrupts,
    seeded_generator,
)


def build_from_type_params(kind, config, where, **extra):
    """Build ``registry.get(kind, config.type)(config.params, **extra)``.

    ``where`` names the config node (for example ``dataset_config.videotoshop.processors.x``)
    so that a missing ``type`` or an unknown name says which key is wrong. ``extra`` keyword
    arguments are passed only if the class's constructor accepts them.
    """
    if config is None or not hasattr(config, "get") or not config.get("type"):
        raise ConfigError(f"{where}: expected a node with a 'type' key, got {config!r}")
    setup_imports()
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
    if not hasattr(processors_config, "items"):
        raise ConfigError(f"{where}: expected a mapping of processors, got {processors_config!r}")
    return {
        key: build_from_type_params("processor", cfg, f"{where}.{key}", **extra)
        for key, cfg in processors_config.items()
    }


def build_encoder(config, where="encoder", **extra):
    return build_from_type_params("encoder", config, where, **extra)


build_image_encoder = build_encoder


def build_model(config):
    """Build and ``build()`` the model named ``config.model``.

    ``config`` is the model's own node with a ``model`` key, or a whole run config (a saved
    ``config.yaml``), whose ``model_config.<model>`` node is then used.
    """
    setup_imports()
    model_class = registry.get_model_class(config.model)
    if "model_config" in config:
        node = OmegaConf.to_container(config.model_config[config.model], resolve=True)
        config = OmegaConf.merge(node, {"model": config.model})
    model = model_class(config)
    model.build()
    model.init_losses()
    return model


def build_optimizer(model, config):
    """Optimizer ``optimizer.type`` over ``model.get_optimizer_parameters(config)``.

    ``type`` is a registered optimizer (``adam_w``) or a ``torch.optim`` class name; its
    ``params`` are keyword arguments (lists become tuples, e.g. ``betas``). Trainable
    parameters that no group holds raise ``ConfigError`` unless
    ``optimizer.allow_unused_parameters`` is set.
    """
    optimizer_config = config.optimizer
    name = optimizer_config.get("type")
    if not name:
        raise ConfigError("optimizer.type is not set (for example optimizer.type=adam_w)")
    setup_imports()
    if name in registry.list("optimizer"):
        factory = registry.get_optimizer_class(name)
    elif isinstance(getattr(torch.optim, name, None), type) and issubclass(
        getattr(torch.optim, name), torch.optim.Optimizer
    ):
        factory = getattr(torch.optim, name)
    else:
        known = registry.list("optimizer") + ["<any torch.optim class>"]
        raise UnknownNameError(f"optimizer.type: unknown optimizer {name!r}. Known: {known}")

    groups = model.get_optimizer_parameters(config)
    if not optimizer_config.get("allow_unused_parameters", False):
        _check_unused_parameters(model, groups)
    params = _plain_kwargs(optimizer_config.get("params"))
    try:
        return factory(groups, **params)
    except (TypeError, ValueError, IndexError, OverflowError) as err:
        raise ConfigError(f"optimizer.params for {name!r}: {err}") from None


def _check_unused_parameters(model, groups):
    grouped = set()
    for group in groups:
        params = group["params"] if isinstance(group, dict) else [group]
        grouped.update(id(p) for p in params)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in grouped]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ConfigError(
            f"{len(missing)} trainable parameters are in no optimizer group ({shown}); "
            f"fix get_optimizer_parameters or set optimizer.allow_unused_parameters=true"
        )


def _plain_kwargs(node):
    if node is None:
        return {}
    plain = (
        OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in plain.items()}


def build_scheduler(optimizer, config):
    """``scheduler.type`` built as ``cls(optimizer, **scheduler.params)``, or None when
    ``training.lr_scheduler`` is off."""
    if not config.training.get("lr_scheduler", False):
        return None
    scheduler_config = config.get("scheduler") or {}
    name = scheduler_config.get("type")
    if not name:
        raise ConfigError("training.lr_scheduler is true but scheduler.type is not set")
    setup_imports()
    try:
        cls = registry.get_scheduler_class(name)
    except ConfigError as err:
        raise type(err)(f"scheduler.type: {err}") from None
    try:
        return cls(optimizer, **_plain_kwargs(scheduler_config.get("params")))
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"scheduler.params for {name!r}: {err}") from None


def build_dataloader_and_sampler(dataset, config, split, seed=0):
    """``(DataLoader, sampler)`` for ``split`` of ``dataset`` on this rank.

    The per-device batch is ``training.batch_size // world_size`` (or
    ``training.batch_size_per_device``). The training split uses a
    ``ResumableDistributedSampler`` (shuffle ``training.shuffle``, drop_last
    ``training.drop_last``; call ``sampler.set_epoch``); other splits use a ``ShardSampler``
    that evaluates every sample exactly once over all ranks. ``seed`` must be the same on
    every rank; the loader's generator is re-seeded per epoch by the trainer. The training
    loader's ``dataset`` is ``SeededSamples(dataset)`` (augmentation seeded per sample).
    Loader workers ignore Ctrl-C: the trainer stops at the end of an update and saves.
    """
    training = config.training
    world_size, rank = get_world_size(), get_rank()
    batch_size = get_batch_size(training, world_size)
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    if iterable:  # shards: the dataset orders, splits and seeds itself (set_epoch, skip)
        drop_last = split == "train" and bool(training.get("drop_last", False))
        shuffle = split == "train" and bool(training.get("shuffle", True))
        sampler = dataset.configure_loader(batch_size, drop_last, shuffle, seed)
    elif split == "train":
        drop_last = bool(training.get("drop_last", False))
        sampler = ResumableDistributedSampler(
            dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=bool(training.get("shuffle", True)),
            seed=seed,
            drop_last=drop_last,
        )
        dataset = SeededSamples(dataset)
    else:
        drop_last = False
        sampler = ShardSampler(dataset, num_replicas=world_size, rank=rank)
    num_workers = int(training.get("num_workers", 0))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=None if iterable else sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=bool(training.get("pin_memory", False)) and torch.cuda.is_available(),
        persistent_workers=num_workers > 0
        and bool(training.get("persistent_workers", False))
        and not iterable,  # a new epoch's set_epoch / skip must reach fresh workers
        collate_fn=dataset.collate_fn,
        worker_init_fn=ignore_interrupts,
        generator=seeded_generator(seed),
    )
    return loader, sampler


def build_trainer(config):
    """The trainer class ``training.trainer`` (default ``mmf``), constructed with ``config``."""
    name = config.training.get("trainer", "mmf")
    setup_imports()
    try:
        cls = registry.get_trainer_class(name)
    except ConfigError as err:
        raise type(err)(f"training.trainer: {err}") from None
    return cls(config)
