"""Checkpoints in ``env.save_dir``: what is written, when, and how a run resumes.

Files (rank 0 writes them; every write goes to a temporary file in the same folder, is
fsync'ed and then ``os.replace``d, so a crash never leaves a half-written checkpoint):

- ``config.yaml``: the fully resolved run config, written when the trainer loads.
- ``current.ckpt``: the latest full state, every ``training.checkpoint_interval`` updates
  and at the end of training: model (unwrapped), optimizer, lr scheduler, grad scaler,
  ``TrainerState`` (counters and data-loader position), callback states, the RNG states
  of every rank and the config. ``checkpoint.resume=true`` continues from it exactly.
- ``models/model_<N>.ckpt``: history copies of ``current.ckpt``; ``checkpoint.max_to_keep``
  -1 keeps all, 0 none, k the last k.
- ``best.ckpt``: the state at the best validation value of ``training.early_stop.criteria``
  (``BestCheckpointCallback``, whether or not early stopping is enabled).
- ``<model>_final.pth``: the bare, unwrapped model state dict at the end of training: the
  weights of the last update or those of ``best.ckpt`` (``checkpoint.final_weights``).

Everything is loaded with ``torch.load(..., weights_only=True)``; the files hold only
tensors and plain Python containers.

A training run starts with ``prepare_run_dir``: a folder that holds another run is refused
unless the run resumes it (``checkpoint.resume``) or replaces it (``checkpoint.overwrite``).
"""
import collections.abc
import logging
import os
import random
import re
import shutil
import warnings

import numpy as np
import torch
from omegaconf import OmegaConf

from mmf.common.errors import CheckpointError, ConfigError, MMFError
from mmf.utils.distributed import all_gather_object, get_rank, get_world_size, is_main
from mmf.utils.file_io import atomic_write, temporary_name_prefix

logger = logging.getLogger(__name__)

_HISTORY_NAME = re.compile(r"^model_(\d+)\.ckpt$")
# Files of a run that only a training run of that folder writes.
RUN_FILES = ("current.ckpt", "best.ckpt")
# TrainerState fields that MMF checkpoints keep at the top level.
_FLAT_COUNTERS = (
    "num_updates", "current_iteration", "current_epoch", "best_update", "best_metric_value"
)
# What restoring a readable file with the wrong content raises (torch, optimizers, RNGs).
_MISFIT_ERRORS = (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError)
# Parts of torch.load's weights_only errors.
_TORCH_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_TORCH_ADVICE = (
    "Weights only load failed", "(1)", "(2)", "Please file an issue", "Check the documentation"
)


def prepare_run_dir(save_dir, options, model_name):
    """Check ``save_dir`` before a training run writes into it (rank 0, before anything is
    written); ``options`` is the ``checkpoint`` config node.

    - ``current.ckpt`` or ``best.ckpt`` that is not a regular file: ``CheckpointError``.
    - An explicit ``resume_file`` that does not exist: ``CheckpointError``.
    - A previous run (``current.ckpt`` or ``best.ckpt``) is continued with ``resume``;
      without it, ``ConfigError`` naming the folder and the two ways on, unless
      ``overwrite``, which removes that run's checkpoints (``current.ckpt``, ``best.ckpt``,
      ``models/model_<N>.ckpt``, ``<model>_final.pth``) first.
    - Temporary files of writes a killed process left behind are removed.
    """
    for name in RUN_FILES:
        path = os.path.join(save_dir, name)
        if os.path.lexists(path) and not os.path.isfile(path):
            raise CheckpointError(f"{path} is not a checkpoint file (a directory?); move it away")
    resume_file = _resume_file(options)
    found = [name for name in RUN_FILES if os.path.isfile(os.path.join(save_dir, name))]
    resume, overwrite = bool(options.get("resume")), bool(options.get("overwrite"))
    if resume and overwrite:
        raise ConfigError("checkpoint.resume and checkpoint.overwrite are both true; choose one")
    if found and not resume:
        if not overwrite:
            raise ConfigError(
                f"env.save_dir {save_dir} already holds a run ({', '.join(found)}); continue it "
                f"with checkpoint.resume=true, or replace it with checkpoint.overwrite=true"
            )
        _remove_run(save_dir, model_name, resume_file)
    _remove_orphan_temporaries(save_dir, model_name)


def _resume_file(options):
    """``checkpoint.resume_file``, or None; ``CheckpointError`` if it names no file."""
    resume_file = options.get("resume_file")
    if resume_file and not os.path.isfile(resume_file):
        raise CheckpointError(f"checkpoint.resume_file: checkpoint file not found: {resume_file}")
    return resume_file or None


def _remove_run(save_dir, model_name, resume_file):
    models_dir = os.path.join(save_dir, "models")
    history = sorted(os.listdir(models_dir)) if os.path.isdir(models_dir) else []
    paths = [os.path.join(save_dir, name) for name in (*RUN_FILES, f"{model_name}_final.pth")]
    paths += [os.path.join(models_dir, name) for name in history if _HISTORY_NAME.match(name)]
    paths = [path for path in paths if os.path.isfile(path)]
    if resume_file and any(os.path.samefile(resume_file, path) for path in paths):
        raise ConfigError(
            f"checkpoint.resume_file {resume_file} is a checkpoint of the run that "
            f"checkpoint.overwrite=true replaces; copy it out of {save_dir} first"
        )
    for path in paths:
        os.remove(path)
    logger.warning("checkpoint.overwrite: removed the previous run's checkpoints %s", paths)


def _remove_orphan_temporaries(save_dir, model_name):
    prefixes = tuple(
        temporary_name_prefix(name)
        for name in (*RUN_FILES, "config.yaml", f"{model_name}_final.pth")
    )
    for name in os.listdir(save_dir):
        if name.startswith(prefixes) and name.endswith(".tmp"):
            os.remove(os.path.join(save_dir, name))
            logger.info("removed %s, left by a write that did not finish", name)


def atomic_torch_save(obj, path):
    atomic_write(path, lambda handle: torch.save(obj, handle))


def load_checkpoint_file(path):
    """The dict stored in ``path``; ``CheckpointError`` naming the path if it is missing,
    truncated or not a checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with warnings.catch_warnings():
            # torch's note on a raw pickle's protocol (not a torch file: the load fails).
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise _load_error(path, err) from None
    if not isinstance(data, collections.abc.Mapping):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a checkpoint dict")
    return data


def _load_error(path, err):
    """``CheckpointError`` for a failed ``torch.load``: pickled objects other than tensors and
    containers are refused as such; anything else is an unreadable file. torch's advice to
    load with ``weights_only=False`` is left out."""
    text = str(err)
    refused = _TORCH_GLOBAL.search(text)
    if refused and "Weights only load failed" in text:
        return CheckpointError(
            f"refusing to load {path}: it holds a pickled Python object ({refused.group(1)}) "
            f"besides tensors and plain containers; weights_only loading does not run it "
            f"(it could execute code)"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = next((line for line in lines if not line.startswith(_TORCH_ADVICE)), "")
    return CheckpointError(
        f"cannot read checkpoint {path} (truncated or not a torch checkpoint): "
        f"{type(err).__name__}: {reason or (lines[0] if lines else '')}"
    )


def _one_line(err):
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return f"{type(err).__name__}: {text}"


def load_state_dict_file(path):
    """Model state dict from ``path``: a bare state dict or a checkpoint with ``"model"``."""
    data = load_checkpoint_file(path)
    state_dict = (
        data.get("model") if isinstance(data.get("model"), collections.abc.Mapping) else data
    )
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path} holds no model state dict (expected tensors by name)")
    return dict(state_dict)


def strip_module_prefix(state_dict, prefix=""):
    """Copy of ``state_dict`` with ``<prefix>module.<name>`` keys renamed ``<prefix><name>``.

    DataParallel/DDP wrappers add ``module.`` to every key; the one place that drops it
    (checkpoints, evaluation and models' ``load_state_dict`` pre-hooks use it; ``prefix``
    is the hook's). Order is kept."""
    wrapped = prefix + "module."
    return {
        (prefix + key[len(wrapped) :] if key.startswith(wrapped) else key): value
        for key, value in state_dict.items()
    }


def capture_rng_state():
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain containers."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    random.setstate(_as_tuple(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class Checkpointer:
    """Saves and restores the full state of a training run in ``save_dir``.

    Args:
        save_dir: the run folder (``env.save_dir``).
        model: the bare model (not DDP-wrapped: the wrapper shares its parameters).
        optimizer, scheduler (or None), scaler: saved and restored as they are.
        state: the ``TrainerState``.
        callbacks: the trainer's callback list; each callback's ``state_dict()`` is saved
            under its ``state_key`` (callbacks whose ``state_key`` is None keep no state).
            The list may be filled after the checkpointer is built.
        config: the run config; saved in ``config.yaml`` and in every checkpoint. Its
            ``checkpoint`` node says what ``resume`` loads and ``max_to_keep``.

    ``save_current`` and ``save_best`` are collective (every rank calls them; the RNG
    states of all ranks are gathered) and rank 0 writes. ``resume`` runs on every rank.
    """

    def __init__(self, save_dir, model, optimizer, scheduler, scaler, state, callbacks, config):
        self.save_dir = save_dir
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.state = state
        self.callbacks = callbacks
        self.config = config
        self.options = config.checkpoint
        self.current_path = os.path.join(save_dir, "current.ckpt")
        self.best_path = os.path.join(save_dir, "best.ckpt")
        self.models_dir = os.path.join(save_dir, "models")
        self.max_to_keep = int(self.options.get("max_to_keep", 0))
        self.pending_rng = None
        self.pending_rng_source = None

    # ---------------------------------------------------------------- writing
    def save_config(self):
        if not is_main():
            return
        text = OmegaConf.to_yaml(self.config, resolve=True)
        atomic_write(
            os.path.join(self.save_dir, "config.yaml"), lambda h: h.write(text.encode("utf-8"))
        )

    def state_dict(self):
        state = self.state
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "fp16_scaler": self.scaler.state_dict(),
            "trainer_state": state.state_dict(),
            "callbacks": {
                cb.state_key: cb.state_dict() for cb in self.callbacks if cb.state_key is not None
            },
            "rng": all_gather_object(capture_rng_state()),
            "config": OmegaConf.to_container(self.config, resolve=True),
            # MMF's flat counters, for tools that read them.
            "num_updates": state.num_updates,
            "current_iteration": state.current_iteration,
            "current_epoch": state.current_epoch,
            "best_update": state.best_update,
            "best_iteration": state.best_update,
            "best_metric_value": state.best_metric_value,
        }

    def save_current(self, history=False):
        """Write ``current.ckpt`` and, with ``history``, a ``models/model_<N>.ckpt`` copy."""
        data = self.state_dict()
        if not is_main():
            return
        atomic_torch_save(data, self.current_path)
        if history and self.max_to_keep != 0:
            self._add_history(self.state.num_updates)

    def save_best(self):
        """Write ``best.ckpt`` (the full state, like ``current.ckpt``)."""
        data = self.state_dict()
        if is_main():
            atomic_torch_save(data, self.best_path)

    def _add_history(self, num_updates):
        os.makedirs(self.models_dir, exist_ok=True)
        target = os.path.join(self.models_dir, f"model_{num_updates}.ckpt")
        temporary = target + ".tmp"
        if os.path.exists(temporary):
            os.remove(temporary)
        try:
            os.link(self.current_path, temporary)
        except OSError:
            shutil.copyfile(self.current_path, temporary)
        os.replace(temporary, target)
        if self.max_to_keep > 0:
            for path in self.history()[: -self.max_to_keep]:
                os.remove(path)

    def history(self):
        """Paths of ``models/model_<N>.ckpt``, oldest first."""
        if not os.path.isdir(self.models_dir):
            return []
        found = []
        for name in os.listdir(self.models_dir):
            match = _HISTORY_NAME.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(self.models_dir, name)))
        return [path for _, path in sorted(found)]

    def finalize(self):
        """Write ``<model>_final.pth`` (bare state dict of the model as it is now); returns
        its path."""
        path = os.path.join(self.save_dir, f"{self.config.model}_final.pth")
        if is_main():
            state_dict = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            atomic_torch_save(state_dict, path)
            logger.info("saved final model to %s", path)
        return path

    # ---------------------------------------------------------------- reading
    def resume(self):
        """Load the checkpoint the config asks for (MMF semantics); returns its path or None.

        1. ``resume_file`` (which must exist) is loaded when ``resume`` is off or
           ``current.ckpt`` does not exist yet (``resume=true`` + ``resume_file`` = "start
           from the file, continue from current.ckpt after a restart").
        2. Else with ``resume``: ``current.ckpt`` (``best.ckpt`` first with ``resume_best``).

        ``resume_pretrained`` with a non-empty ``pretrained_state_mapping`` copies only the
        mapped weights; ``reset.{all,optimizer,counts,fp16_scaler}`` skip parts of the state.
        """
        options = self.options
        if options.get("resume_zoo"):
            raise ConfigError(
                "checkpoint.resume_zoo is not supported (there is no model zoo); "
                "use checkpoint.resume_file"
            )
        resume_file = _resume_file(options)
        if resume_file and (not options.get("resume") or not os.path.isfile(self.current_path)):
            self.load(resume_file, pretrained=bool(options.get("resume_pretrained")))
            return resume_file
        if options.get("resume"):
            order = [self.current_path, self.best_path]
            if options.get("resume_best"):
                order.reverse()
            for path in order:
                if os.path.isfile(path):
                    self.load(path)
                    return path
            logger.info("checkpoint.resume: nothing to resume in %s; starting fresh", self.save_dir)
        return None

    def load(self, path, pretrained=False):
        """Load ``path``: its weights and, for a full checkpoint, the training state.

        With ``pretrained`` and a ``pretrained_state_mapping``, only the mapped weights."""
        data = load_checkpoint_file(path)
        bare = not isinstance(data.get("model"), collections.abc.Mapping)
        try:
            weights = self._model_keys(data if bare else data["model"])
            mapping = self.options.get("pretrained_state_mapping") or {}
            if pretrained and mapping:
                self._load_mapped_weights(path, weights, mapping)
                return
            if pretrained:
                logger.warning(
                    "checkpoint.resume_pretrained without pretrained_state_mapping loads the "
                    "full state of %s (MMF semantics); use checkpoint.reset.* to skip parts",
                    path,
                )
            self._load_weights(path, weights)
            if not bare:
                self._load_training_state(path, data)
        except MMFError:
            raise
        except _MISFIT_ERRORS as err:
            # A readable file whose content does not fit this model, optimizer or run.
            raise CheckpointError(f"{path} does not fit this run: {_one_line(err)}") from err

    def _model_keys(self, state_dict):
        """``state_dict`` with this model's key names (no ``module.``, older names mapped)."""
        return {
            self.model.format_state_key(key): value
            for key, value in strip_module_prefix(state_dict).items()
        }

    def _load_weights(self, path, weights):
        if not set(weights) & set(self.model.state_dict()):
            raise CheckpointError(
                f"{path} holds none of the weights of model {self.config.model} "
                f"(its keys: {sorted(weights)[:5]})"
            )
        incompatible = self.model.load_state_dict(weights, strict=False)
        for kind, keys in (
            ("missing", incompatible.missing_keys),
            ("unexpected", incompatible.unexpected_keys),
        ):
            if keys:
                logger.warning("%s: %d %s keys: %s", path, len(keys), kind, keys[:10])
        logger.info("loaded model weights from %s", path)

    def _load_mapped_weights(self, path, weights, mapping):
        own = self.model.state_dict()
        copied = {}
        for own_prefix, ckpt_prefix in mapping.items():
            for key, value in own.items():
                if not key.startswith(own_prefix):
                    continue
                source = ckpt_prefix + key[len(own_prefix) :]
                if source in weights and weights[source].shape == value.shape:
                    copied[key] = weights[source]
        if not copied:
            raise CheckpointError(
                f"checkpoint.pretrained_state_mapping {dict(mapping)} matched no weights of "
                f"the model in {path}"
            )
        self.model.load_state_dict(copied, strict=False)
        logger.info("loaded %d mapped pretrained tensors from %s", len(copied), path)

    def _load_training_state(self, path, data):
        """Optimizer, scaler, counters, scheduler, callback states and RNG states of a full
        checkpoint, less what ``checkpoint.reset`` skips."""
        reset = self.options.get("reset") or {}
        reset_all = bool(reset.get("all", False))
        if not (reset_all or reset.get("optimizer", False)) and data.get("optimizer"):
            self.optimizer.load_state_dict(data["optimizer"])
        if not (reset_all or reset.get("fp16_scaler", False)) and data.get("fp16_scaler"):
            self.scaler.load_state_dict(data["fp16_scaler"])
        if reset_all or reset.get("counts", False):
            return
        self._load_counters(data)
        self._load_scheduler(data.get("lr_scheduler"))
        states = data.get("callbacks") or {}
        for callback in self.callbacks:
            if callback.state_key in states:
                callback.load_state_dict(states[callback.state_key])
        self._keep_rng(path, data.get("rng"))
        logger.info(
            "resumed from %s at update %d (epoch %d, batch %d)",
            path,
            self.state.num_updates,
            self.state.current_epoch,
            self.state.batches_in_epoch,
        )

    def _load_counters(self, data):
        if "trainer_state" in data:
            self.state.load_state_dict(data["trainer_state"])
            return
        # An MMF checkpoint: flat counters.
        for key in _FLAT_COUNTERS:
            if key in data:
                setattr(self.state, key, data[key])

    def _load_scheduler(self, state):
        scheduler = self.scheduler
        if scheduler is None:
            return
        if state:
            scheduler.load_state_dict(state)
            return
        # An MMF checkpoint without scheduler state: jump the schedule to the update count.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scheduler.last_epoch = self.state.num_updates - 1
            scheduler.step()

    def _keep_rng(self, path, rng):
        """Keep this rank's RNG state for ``restore_rng`` (applied when setup is done)."""
        if rng and len(rng) == get_world_size():
            self.pending_rng, self.pending_rng_source = rng[get_rank()], path
        elif rng:
            logger.warning(
                "%s was saved by %d processes, this run has %d: RNG states are not restored",
                path,
                len(rng),
                get_world_size(),
            )

    def restore_rng(self):
        """Apply the RNG state of a resumed checkpoint (call when setup is finished)."""
        if self.pending_rng is not None:
            try:
                restore_rng_state(self.pending_rng)
            except _MISFIT_ERRORS as err:
                raise CheckpointError(
                    f"{self.pending_rng_source}: malformed RNG state: {_one_line(err)}"
                ) from err
            self.pending_rng = None

    def load_best_weights(self):
        """Load the weights of ``best.ckpt`` into the model, if it exists; True if loaded."""
        if not os.path.isfile(self.best_path):
            return False
        self.model.load_state_dict(strip_module_prefix(load_state_dict_file(self.best_path)))
        logger.info(
            "restored the best model (update %d) from %s", self.state.best_update, self.best_path
        )
        return True
