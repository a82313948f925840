"""Configuration: OmegaConf layers with MMF's ``includes:`` and command-line conventions.

Layers, each overriding the previous one:

1. ``mmf/configs/defaults.yaml``;
2. the model's defaults (``registry.get_model_class(model).config_path()``);
3. each dataset's defaults (``builder.config_path()``);
4. the user's ``config=<yaml>`` with its ``includes:``;
5. the command-line dotlist ``a.b=c`` / ``a.b[0]=c``.

Every yaml file and command-line value is read as OmegaConf reads it (YAML: ``1e-6`` is
a float, ``[a, b]`` a list, ``null`` null; MMF's ``None`` is null too); a duplicate key is
an error. A command-line key that no layer defines raises ``ConfigError`` naming it; so
does a yaml key that the framework's sections do not define, unless it is one of the
original's keys listed in the ``compatibility.yaml`` files (``mmf.utils.config_checks``).
The result is fully resolved, so environment variables are frozen at launch, and in
struct mode.
"""
import contextlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.utils.config_checks import check_config

logger = logging.getLogger(__name__)

# Keys that name what to run; they may be given without a dotted path.
_TOP_LEVEL_CHOICES = ("config", "model", "dataset", "datasets", "run_type")
_LEGACY_KEYS = {
    "training.resume": "checkpoint.resume",
    "training.resume_file": "checkpoint.resume_file",
    "training.resume_best": "checkpoint.resume_best",
    "training.load_pretrained": "checkpoint.resume_pretrained",
    "training.pretrained_mapping": "checkpoint.pretrained_state_mapping",
    "training.run_type": "run_type",
}


def get_mmf_root():
    """Directory of the ``mmf`` package."""
    return Path(__file__).resolve().parent.parent


def register_resolvers():
    """Resolvers used by ``defaults.yaml`` (idempotent)."""
    OmegaConf.register_resolver(
        "device_count", lambda: max(torch.cuda.device_count(), 1), replace=True
    )
    OmegaConf.register_resolver("package_file", package_file, replace=True)


def package_file(package, relative_path):
    """``${package_file:pkg,path}``: absolute path of a file shipped inside an installed package.

    The package is located without being imported; a missing package or file raises
    ``ConfigError`` naming both.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package_file: package {package!r} is not installed")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative_path
        if candidate.is_file():
            return str(candidate)
    raise ConfigError(f"package_file: {package!r} has no file {relative_path!r}")


def _find_file(path, search_dirs):
    candidate = Path(os.path.expanduser(str(path)))
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for directory in search_dirs:
        full = Path(directory) / candidate
        if full.is_file():
            return full
    return None


def load_yaml(path, _stack=()):
    """Load a yaml file and merge its ``includes:`` (in order) underneath its own body.

    ``path`` is tried as given, then relative to the repository root and the ``mmf``
    package. Each include is tried relative to the ``mmf`` package, then to the including
    file's folder, then to the repository root.
    """
    root = get_mmf_root()
    if _stack:
        search = [root, Path(_stack[-1]).parent, root.parent, Path.cwd()]
    else:
        search = [Path.cwd(), root.parent, root]
    found = _find_file(path, search)
    if found is None:
        where = f" (included from {_stack[-1]})" if _stack else ""
        raise ConfigError(f"config file not found: {path}{where}")
    found = found.resolve()
    if str(found) in _stack:
        chain = " -> ".join(list(_stack) + [str(found)])
        raise ConfigError(f"circular includes: {chain}")

    body = _read_mapping(found)
    includes = body.pop("includes", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, (list, ListConfig)):
        raise ConfigError(f"{found}: 'includes' must be a list of paths")
    merged = OmegaConf.create({})
    for include in includes:
        merged = _merge(merged, load_yaml(include, _stack + (str(found),)), str(found))
    return _merge(merged, body, str(found))


def _read_mapping(path):
    """The mapping at the top of yaml file ``path``, read by OmegaConf's own loader: floats
    as OmegaConf reads them (``1e-6`` is a float, unlike PyYAML's ``safe_load``) and a
    duplicate key refused, naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None and not isinstance(root, yaml.MappingNode):
            kind = "a list" if isinstance(root, yaml.SequenceNode) else f"{root.value!r}"
            raise ConfigError(f"{path}: the top level must be a mapping, got {kind}")
        return OmegaConf.create(text) if root is not None else OmegaConf.create({})
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_problem(err, path)) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not a text yaml file: {err}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path}: {_first_line(err)}") from None


def _yaml_problem(err, path):
    mark = getattr(err, "problem_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if problem.startswith("found duplicate key "):
        key = problem[len("found duplicate key "):]
        return f"duplicate key {key!r} in {path}{line} (a second block would replace the first)"
    return f"malformed YAML in {path}{line}: {problem}"


def _first_line(err):
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _merge(base, other, where):
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: cannot merge: {err}") from None


def parse_value(text, key="value"):
    """Command-line value, read as OmegaConf's dotlist reads it (YAML: ``1e-6`` is a float,
    ``[a/x.txt, b]`` a list, ``null`` and an empty value null, ``'8'`` a string), plus MMF's
    ``None`` for null. Text that is not YAML raises ``ConfigError`` naming ``key``."""
    if text.strip() == "None":
        return None
    try:
        parsed = OmegaConf.from_dotlist([f"value={text}"])
    except (yaml.YAMLError, OmegaConfBaseException, ValueError) as err:
        problem = getattr(err, "problem", None) or _first_line(err)
        raise ConfigError(
            f"command-line value {key}={text} is not valid YAML ({problem}); "
            f"quote a literal string: {key}=\"'...'\""
        ) from None
    return OmegaConf.to_container(parsed)["value"]


def split_opts(opts):
    """``["config=a.yaml", "model=rice", "a.b=1"]`` -> (choices, [(key, value)])."""
    choices, overrides = {}, []
    for opt in opts:
        if "=" not in opt:
            raise ConfigError(f"command-line option {opt!r} is not of the form key=value")
        key, value = opt.split("=", 1)
        key = key.strip().lstrip("+")
        if not key:
            raise ConfigError(f"command-line option {opt!r} has an empty key")
        if key in _TOP_LEVEL_CHOICES:
            choices["datasets" if key == "dataset" else key] = value
        else:
            overrides.append((key, value))
    return choices, overrides


def apply_override(config, key, value):
    """Set ``key`` (``a.b``, ``a.b[0]``) to ``value``; the key must already exist."""
    parts = _split_key(key)
    node = config
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if isinstance(part, int):
            if not isinstance(node, ListConfig):
                raise ConfigError(f"unknown config key {key!r}: not a list at index [{part}]")
            if not -len(node) <= part < len(node):
                raise ConfigError(
                    f"config key {key!r}: index {part} is out of range (list has {len(node)})"
                )
        elif not isinstance(node, DictConfig) or part not in node:
            raise ConfigError(
                f"unknown config key {key!r}: no config layer defines it "
                f"(new keys can come from yaml files, not from the command line)"
            )
        if last:
            with open_dict(node) if isinstance(node, DictConfig) else contextlib.nullcontext():
                node[part] = value
        else:
            node = node[part]


def _split_key(key):
    parts = []
    for piece in key.split("."):
        if not piece:
            raise ConfigError(f"malformed config key {key!r}")
        name, _, rest = piece.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, closing, rest = rest.partition("]")
            if not closing:
                raise ConfigError(f"malformed config key {key!r}: missing ']'")
            try:
                parts.append(int(index))
            except ValueError:
                raise ConfigError(
                    f"malformed config key {key!r}: [{index}] is not an index"
                ) from None
            if rest:
                if not rest.startswith("["):
                    raise ConfigError(f"malformed config key {key!r}")
                rest = rest[1:]
    return parts


def import_user_dir(user_dir):
    """Import the package at ``user_dir`` so that its registrations run."""
    if not user_dir:
        return
    path = Path(os.path.expanduser(str(user_dir))).resolve()
    init = path / "__init__.py"
    if not init.is_file():
        raise ConfigError(f"env.user_dir {user_dir!r} is not a Python package (no __init__.py)")
    name = path.name
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(path)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _dataset_names(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [name.strip() for name in str(value).split(",") if name.strip()]


def component_layers(model_name, dataset_names):
    """The framework's config layers under a user's yaml, in merge order: ``defaults.yaml``,
    the model's defaults (``config_path()`` of model ``model_name``, if given), then each
    dataset's (its builder's ``config_path()``). Used for training and evaluation alike;
    the registry must be populated (``setup_imports``)."""
    layers = [load_yaml(get_mmf_root() / "configs" / "defaults.yaml")]
    components = [("model", model_name)] if model_name else []
    components += [("builder", name) for name in dataset_names]
    for kind, name in components:
        path = registry.get(kind, name).config_path()
        if path is not None:
            layers.append(load_yaml(get_mmf_root() / path))
    return layers


# Processor types of the original MMF that no dataset here reads (its text-side processors).
FOREIGN_PROCESSOR_TYPES = frozenset(
    (
        "masked_bert_tokenizer", "masked_token", "masked_roberta_tokenizer", "roberta_tokenizer",
        "multi_sentence_bert_tokenizer", "multi_sentence_roberta_tokenizer", "vocab",
        "simple_word", "simple_sentence",
    )
)


def drop_foreign_processors(config):
    """The policy for processors nobody registered, in training and evaluation alike.

    A processor of ``dataset_config.<name>.processors`` whose type is one of the original
    MMF's ``FOREIGN_PROCESSOR_TYPES`` (the authors' configs may carry them; nothing here
    reads their output) and is not registered is removed from ``config``, with a warning
    naming it. Any other unregistered type stays and fails when the dataset builds its
    processors (``ConfigError`` naming the key and the known names).
    """
    known = set(registry.list("processor"))
    for dataset_name, node in (config.get("dataset_config") or {}).items():
        processors = node.get("processors") if hasattr(node, "get") else None
        for key in list(processors or {}):
            kind = processors[key].get("type") if hasattr(processors[key], "get") else None
            if kind in FOREIGN_PROCESSOR_TYPES and kind not in known:
                logger.warning(
                    "dataset_config.%s.processors.%s: type %r is an original MMF processor that "
                    "nothing here reads; dropped", dataset_name, key, kind,
                )
                del processors[key]


class Configuration:
    """Builds the run config from command-line options.

    ``Configuration(["config=x.yaml", "model=rice", "dataset=videotoshop", "a.b=1"])``;
    ``get_config()`` returns the resolved ``DictConfig`` in struct mode.
    """

    def __init__(self, opts=()):
        register_resolvers()
        choices, overrides = split_opts(list(opts))
        base = load_yaml(get_mmf_root() / "configs" / "defaults.yaml")

        user = OmegaConf.create({})
        if choices.get("config"):
            user = load_yaml(choices["config"])

        model = choices.get("model") or user.get("model") or base.get("model")
        datasets = _dataset_names(choices.get("datasets") or user.get("datasets"))

        user_dir = dict(overrides).get("env.user_dir") or os.environ.get("MMF_USER_DIR")
        if not user_dir:
            user_dir = OmegaConf.select(user, "env.user_dir", default=None, throw_on_missing=False)
        import_user_dir(user_dir)

        from mmf.utils.env import setup_imports

        setup_imports()
        config = OmegaConf.create({})
        for layer in component_layers(model, datasets) + [user]:
            config = _merge(config, layer, "configuration")

        for key, value in overrides:
            apply_override(config, key, parse_value(value, key))
        drop_foreign_processors(config)
        with open_dict(config):
            if model:
                config.model = model
            config.datasets = ",".join(datasets)
            if choices.get("config"):
                config.config = choices["config"]
            if choices.get("run_type"):
                config.run_type = choices["run_type"]
        _upgrade(config)
        learning_rate = config.get("learning_rate")
        if learning_rate is not None:
            OmegaConf.update(config, "optimizer.params.lr", learning_rate, force_add=True)
        try:
            resolved = OmegaConf.to_container(config, resolve=True)
        except OmegaConfBaseException as err:
            raise ConfigError(f"cannot resolve config: {err}") from None
        check_config(resolved, OmegaConf.to_container(base), source=choices.get("config"))
        if resolved["training"]["device"].startswith("cuda") and not torch.cuda.is_available():
            resolved["training"]["device"] = "cpu"
        self.config = OmegaConf.create(resolved)
        OmegaConf.set_struct(self.config, True)
        warn_compat_keys(self.config)

    def get_config(self):
        return self.config


def _upgrade(config):
    """Move each key of ``_LEGACY_KEYS`` that the config sets to its new name, with a warning."""
    for old, new in _LEGACY_KEYS.items():
        parent_key, _, name = old.rpartition(".")
        parent = OmegaConf.select(config, parent_key, default=None)
        if not isinstance(parent, DictConfig) or parent.get(name) is None:
            continue
        logger.warning("config key %s is deprecated; use %s", old, new)
        OmegaConf.update(config, new, parent[name], force_add=True)
        with open_dict(parent):
            del parent[name]


def compat_files():
    """The ``compatibility.yaml`` files under ``mmf/configs``: each holds, at their real paths,
    the keys of the defaults file beside it (which includes it) that are accepted for
    compatibility and have no effect."""
    return sorted(get_mmf_root().glob("configs/**/compatibility.yaml"))


def warn_compat_keys(config):
    """Log one warning naming each key of ``compat_files()`` whose value in ``config`` differs
    from its default there; returns those keys. Interpolated defaults
    (``${training.experiment_name}``, ``${oc.env:...}``) are resolved against ``config``; keys
    of components that the run does not load are skipped. A mapping replaced by another
    kind of value is named once."""
    plain = OmegaConf.to_container(config, resolve=True)
    context = OmegaConf.create(plain)
    changed = []
    for path in compat_files():
        compat = OmegaConf.to_container(load_yaml(path))
        for key, default in _leaves(compat):
            name, value = _lookup(plain, key)
            if value is _ABSENT or name in changed:
                continue
            if name == key and value == _resolve_in(context, default):
                continue
            logger.warning(
                "config key %s has no effect (accepted for compatibility, %s)",
                name,
                path.relative_to(get_mmf_root()),
            )
            changed.append(name)
    return changed


_ABSENT = object()


def _leaves(node, prefix=""):
    """(dotted key, value) of the scalars, lists and empty mappings of a plain mapping."""
    for name, child in node.items():
        if isinstance(child, dict) and child:
            yield from _leaves(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", child


def _lookup(tree, key):
    """(key, value) of dotted ``key`` in plain containers; ``value`` is ``_ABSENT`` when a
    mapping lacks the key. A non-mapping on the way is returned with its own key."""
    node, parts = tree, key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict):
            return ".".join(parts[:depth]), node
        if part not in node:
            return key, _ABSENT
        node = node[part]
    return key, node


def _resolve_in(context, default):
    """``default``, with an interpolation in it resolved in ``context`` (a DictConfig)."""
    if not (isinstance(default, str) and "${" in default):
        return default
    with open_dict(context):
        context["_compat_default"] = default
        return context["_compat_default"]


def load_config(path, overrides=()):
    """Load a saved run config (for example ``save/<exp>/config.yaml``) with optional overrides."""
    register_resolvers()
    config = load_yaml(path)
    for key, value in overrides:
        apply_override(config, key, value)
    return config
