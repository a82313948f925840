"""Checks of a built run config, run before anything is built from it.

All take plain containers (``OmegaConf.to_container``); ``defaults`` is the framework layer,
``defaults.yaml`` with the ``compatibility.yaml`` it includes (the original MMF's keys that
have no effect here).

- ``check_known_keys``: a key under a framework section (``FRAMEWORK_SECTIONS``) that the
  defaults do not define is a ``ConfigError`` with a "did you mean"; a mapping that is empty
  in the defaults (``checkpoint.pretrained_state_mapping``) takes any key. ``strict=False``
  (evaluation of a saved run) logs a warning instead.
- ``check_types``: a framework key holds the kind of value its default has.
- ``check_values``: ``run_type`` combines train, val and inference; counts are not
  negative; ``training.device`` is cpu or cuda[:N].
- ``check_component_params``: each name of ``optimizer.params`` / ``scheduler.params`` is a
  keyword the registered (or ``torch.optim``) class takes, and numbers are numbers.
"""
import difflib
import inspect
import logging
import math
import re

import torch

from mmf.common.errors import ConfigError
from mmf.common.registry import registry

logger = logging.getLogger(__name__)

# Sections whose keys the framework defines; other top-level keys are free.
FRAMEWORK_SECTIONS = (
    "training", "checkpoint", "evaluation", "env", "distributed", "optimizer", "scheduler",
    "trainer", "multitasking",
)
RUN_TYPE_PARTS = ("train", "val", "inference", "test")
# Keys that count something: a negative value is an error.
COUNTS = ("training.max_updates", "training.max_epochs", "training.num_workers")
DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_config(config, defaults, source=None):
    """Every check of this module, for training: the first problem raises ``ConfigError``.
    ``source`` names the user's yaml in the unknown-key message."""
    check_known_keys(config, defaults, source=source)
    check_types(config, defaults)
    check_values(config)
    check_component_params(config)


def check_known_keys(config, defaults, strict=True, source=None):
    """Raise ``ConfigError`` (``strict``) or warn, naming every key under
    ``FRAMEWORK_SECTIONS`` that ``defaults`` lacks, each with its closest known key."""
    unknown = []
    for section in FRAMEWORK_SECTIONS:
        unknown += _unknown_keys(config.get(section), defaults.get(section), section)
    if not unknown:
        return
    described = []
    for key, known in unknown:
        parent = key.rsplit(".", 1)[0]
        close = difflib.get_close_matches(key.rsplit(".", 1)[1], known, n=1)
        hint = f" (did you mean '{parent}.{close[0]}'?)" if close else ""
        described.append(f"{key!r}{hint}")
    where = f" in {source} or its includes" if source else ""
    message = f"unknown config key{'s' if len(unknown) > 1 else ''}{where}: {', '.join(described)}"
    if strict:
        raise ConfigError(message)
    logger.warning("%s; ignored", message)


def _unknown_keys(value, default, prefix):
    """(dotted key, known names beside it) for each key of mapping ``value`` that mapping
    ``default`` lacks, recursively; an empty ``default`` mapping takes any key."""
    if not isinstance(value, dict) or not isinstance(default, dict) or not default:
        return []
    unknown = []
    for name, child in value.items():
        if name in default:
            unknown += _unknown_keys(child, default[name], f"{prefix}.{name}")
        else:
            unknown.append((f"{prefix}.{name}", [str(k) for k in default]))
    return unknown


# Framework keys whose default is set but which may be null, with the kinds they accept.
_NULLABLE = {
    "training.seed": (int,),
    "training.max_updates": (int,),
    "training.max_epochs": (int, float),
    "training.max_grad_l2_norm": (int, float),
    "training.batch_size_per_device": (int,),
    "checkpoint.resume_file": (str,),
    "training.callbacks": (list,),
    "training.lr_steps": (list,),
    "evaluation.metrics": (list,),
    "checkpoint.pretrained_state_mapping": (dict,),
    "checkpoint.reset": (dict,),
}
_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
               list: "a list", dict: "a mapping"}


def check_types(config, defaults):
    """``ConfigError`` naming the key when a framework key (``training``, ``checkpoint``,
    ``distributed``, ``evaluation``, ``run_type``) holds another kind of value than its
    default in ``defaults.yaml`` (e.g. a list for an integer); ``optimizer`` and
    ``scheduler`` must be mappings whose ``type`` is a name. Keys whose default is null,
    and keys that ``defaults.yaml`` does not have, take any value."""
    for section in ("training", "checkpoint", "distributed", "evaluation", "run_type"):
        if section in config:
            _check_value(config[section], defaults.get(section), section)
    for section in ("optimizer", "scheduler"):
        node = config.get(section)
        if node is None:
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{section} must be a mapping with 'type' and 'params', got {node!r}")
        if node.get("type") is not None and not isinstance(node["type"], str):
            raise ConfigError(f"{section}.type must be a name, got {node['type']!r}")
        if node.get("params") is not None and not isinstance(node["params"], dict):
            raise ConfigError(f"{section}.params must be a mapping, got {node['params']!r}")


def _check_value(value, default, key):
    if key in _NULLABLE:
        if value is None:
            return
        kinds = _NULLABLE[key]
    elif default is None or (isinstance(default, str) and default.startswith("${")):
        return
    elif isinstance(default, bool):
        kinds = (bool,)
    elif isinstance(default, int):
        kinds = (int,)
    elif isinstance(default, float):
        kinds = (int, float)
    elif isinstance(default, str):
        kinds = (str, int, float)
    else:
        kinds = (type(default),)
    if not _is_kind(value, kinds):
        expected = " or ".join(_KIND_NAMES[kind] for kind in kinds)
        nullable = " or null" if key in _NULLABLE else ""
        raise ConfigError(f"config key {key} must be {expected}{nullable}, got {value!r}")
    if isinstance(value, dict):
        for name, child in default.items():
            if name in value:
                _check_value(value[name], child, f"{key}.{name}")


def _is_kind(value, kinds):
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds) and not (isinstance(value, float) and not math.isfinite(value))


def check_values(config):
    """``run_type``, the counts of ``COUNTS`` and ``training.device``, each wrong value one
    ``ConfigError`` naming the key (kinds are ``check_types``' business)."""
    run_type = config.get("run_type")
    parts = str(run_type).split("_")
    if not all(part in RUN_TYPE_PARTS for part in parts) or len(set(parts)) != len(parts):
        raise ConfigError(
            f"run_type {run_type!r} is not a combination of {', '.join(RUN_TYPE_PARTS)} "
            f"joined by '_' (e.g. train_val_inference)"
        )
    for key in COUNTS:
        section, name = key.split(".")
        value = (config.get(section) or {}).get(name)
        if _is_kind(value, (int, float)) and value < 0:
            raise ConfigError(f"config key {key} must be >= 0, got {value!r}")
    device = (config.get("training") or {}).get("device")
    if not DEVICE.match(str(device)):
        raise ConfigError(f"training.device must be cpu, cuda or cuda:<index>, got {device!r}")


def check_component_params(config):
    """Each key of ``optimizer.params`` / ``scheduler.params`` must be a keyword of the class
    named by ``type`` (registered, or a ``torch.optim`` class), with a number where its
    default is a number. Unknown types are left to the builders, which name them."""
    for kind in ("optimizer", "scheduler"):
        node = config.get(kind) or {}
        params = node.get("params")
        factory = _factory(kind, node.get("type"))
        accepted = _keyword_defaults(factory) if factory is not None else None
        if accepted is None or not isinstance(params, dict):
            continue
        for name, value in params.items():
            key = f"{kind}.params.{name}"
            if name not in accepted:
                close = difflib.get_close_matches(str(name), list(accepted), n=1)
                hint = f" (did you mean '{kind}.params.{close[0]}'?)" if close else ""
                raise ConfigError(
                    f"unknown config key {key!r}{hint}: {kind} {node['type']!r} takes "
                    f"{sorted(accepted)}"
                )
            _check_number(value, accepted[name], key)


def _factory(kind, name):
    if not isinstance(name, str):
        return None
    if name in registry.list(kind):
        return registry.get(kind, name)
    candidate = getattr(torch.optim, name, None) if kind == "optimizer" else None
    return candidate if isinstance(candidate, type) else None


def _keyword_defaults(factory):
    """{keyword: default} of ``factory`` past its first argument (the parameters, or the
    optimizer), or None when it takes any keyword. A function taking ``**kwargs`` passes
    them on to the class its return annotation names."""
    signature = inspect.signature(factory)
    parameters = list(signature.parameters.values())[1:]
    accepted = {
        p.name: p.default for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    if not any(p.kind is p.VAR_KEYWORD for p in parameters):
        return accepted
    returned = signature.return_annotation
    if not isinstance(returned, type) or returned is inspect.Signature.empty:
        return None
    passed_on = _keyword_defaults(returned)
    return None if passed_on is None else {**passed_on, **accepted}


def _check_number(value, default, key):
    numbers = (int, float)
    if isinstance(default, tuple) and default and all(_is_kind(v, numbers) for v in default):
        if not (isinstance(value, (list, tuple)) and len(value) == len(default)
                and all(_is_kind(v, numbers) for v in value)):
            raise ConfigError(f"config key {key} must be a list of {len(default)} numbers, "
                              f"got {value!r}")
    elif _is_kind(default, numbers) and not _is_kind(value, numbers):
        raise ConfigError(f"config key {key} must be a finite number, got {value!r}")
