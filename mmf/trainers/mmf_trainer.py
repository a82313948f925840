"""``MMFTrainer``: one flat trainer class; ``load()`` sets a run up, ``train()`` runs it.

A run, as ``train()`` reads::

    on_train_start
    until max_updates / max_epochs / early stop:
        epoch start: sampler.set_epoch(epoch), skip the batches a resumed run already saw
        for each batch: forward (autocast) -> loss / update_frequency -> backward
            every update_frequency batches: [unscale_ + clip] -> step -> on_update_end
                (lr scheduler, checkpoint, logging) -> validation every evaluation_interval
        epoch end: log skipped samples
    final validation -> on_train_end (current.ckpt, last or best weights -> <model>_final.pth)
    evaluation of the test split when run_type asks for it

Ctrl-C (SIGINT) during training stops after the update in progress: ``current.ckpt`` is
written and ``TrainingInterrupted`` raised (``mmf_run`` prints one line and exits 130).

``run_type`` is matched by substring, like MMF: ``train``, ``val``, ``inference``/``test``.
"""
import contextlib
import logging
import math
import os
import random

import torch
from omegaconf import OmegaConf, open_dict

from mmf.common.errors import ConfigError, DataError, MMFError
from mmf.common.registry import registry
from mmf.datasets.prefetch import to_device
from mmf.trainers.callbacks.best_checkpoint import BestCheckpointCallback
from mmf.trainers.callbacks.checkpoint import CheckpointCallback
from mmf.trainers.callbacks.early_stopping import EarlyStoppingCallback
from mmf.trainers.callbacks.logistics import LogisticsCallback
from mmf.trainers.callbacks.lr_scheduler import LRSchedulerCallback
from mmf.trainers.interrupt import InterruptFlag, TrainingInterrupted
from mmf.trainers.state import TrainerState
from mmf.utils.build import (
    build_dataloader_and_sampler,
    build_from_type_params,
    build_model,
    build_optimizer,
    build_scheduler,
)
from mmf.utils.checkpoint import Checkpointer, prepare_run_dir
from mmf.utils.distributed import (
    all_gather_object,
    broadcast_object,
    env_from_environ,
    get_rank,
    get_world_size,
    is_main,
    synchronize,
)
from mmf.utils.env import set_seed
from mmf.utils.general import ensure_writable_dir, is_batch_empty, sum_losses, unwrap_model

logger = logging.getLogger(__name__)


class NonFiniteLossError(MMFError, FloatingPointError):
    """A training loss became NaN or infinite (``training.exit_on_nan_losses``)."""


@registry.register_trainer("mmf")
class MMFTrainer:
    """Trains and evaluates the model ``config.model`` on the dataset ``config.datasets``.

    Public attributes after ``load()``: ``model`` (DDP-wrapped when distributed),
    ``optimizer``, ``scheduler`` (or None), ``scaler``, ``state`` (``TrainerState``),
    ``callbacks``, ``checkpointer``, ``train_loader``/``val_loader``/``test_loader`` (None
    when the run does not need the split), ``device``, ``save_dir``, ``max_updates``.
    """

    def __init__(self, config):
        self.config = config
        self.training_config = config.training
        self.run_type = str(config.run_type)
        self.state = TrainerState()
        self.callbacks = []
        self.should_stop = False
        self.stop_reason = None
        self.interrupt = InterruptFlag()
        self.interrupted = False
        self._last_validation = None

    # ================================================================== setup
    def load(self):
        self._configure_device()
        self.save_dir = str(self.config.env.save_dir)
        if is_main():
            ensure_writable_dir(self.save_dir, "env.save_dir")
            if "train" in self.run_type:
                prepare_run_dir(self.save_dir, self.config.checkpoint, self.config.get("model"))
        self._configure_seed()
        self._load_datasets()
        self._load_model()
        self.optimizer = build_optimizer(self.model, self.config)
        self.scheduler = build_scheduler(self.optimizer, self.config)
        self._configure_precision()
        self._load_metrics()
        self.checkpointer = Checkpointer(
            self.save_dir,
            self.model,
            self.optimizer,
            self.scheduler,
            self.scaler,
            self.state,
            self.callbacks,
            self.config,
        )
        self.callbacks.extend(self._build_callbacks())
        self.checkpointer.resume()
        self.checkpointer.save_config()
        self._parallelize_model()
        self.checkpointer.restore_rng()
        self._emit("on_init_end")
        return self

    def _configure_device(self):
        env = env_from_environ()
        self.distributed = get_world_size() > 1
        wants_cuda = str(self.training_config.device).startswith("cuda")
        if wants_cuda and torch.cuda.is_available():
            self.device = torch.device(
                "cuda", env.local_rank if self.distributed else torch.cuda.current_device()
            )
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")

    def _configure_seed(self):
        seed = self.training_config.get("seed")
        if seed is None or seed == -1:
            # Every rank must shuffle alike: draw on rank 0 and share.
            base = broadcast_object(random.SystemRandom().randint(1, 100000))
        else:
            base = int(seed)
        if seed is not None:
            set_seed(base + get_rank(), bool(self.training_config.get("deterministic", False)))
        self.data_seed = base
        if self.training_config.get("detect_anomaly", False):
            torch.autograd.set_detect_anomaly(True)

    def _load_datasets(self):
        names = [n.strip() for n in str(self.config.get("datasets") or "").split(",") if n.strip()]
        if len(names) != 1:
            raise ConfigError(
                f"this trainer needs exactly one dataset (dataset=<name>), got {names or 'none'}"
            )
        self.dataset_name = name = names[0]
        dataset_config = self.config.dataset_config.get(name)
        if dataset_config is None:
            raise ConfigError(f"dataset_config.{name} is not defined")
        builder = registry.get_builder_class(name)()
        if is_main():
            builder.build(dataset_config, "train")
        synchronize()

        wanted = {
            "train": "train" in self.run_type,
            "val": "val" in self.run_type,
            "test": "inference" in self.run_type or "test" in self.run_type,
        }
        self.train_loader = self.val_loader = self.test_loader = None
        self.train_sampler = None
        for split, needed in wanted.items():
            if not needed:
                continue
            dataset = builder.load_dataset(dataset_config, split)
            if dataset is None:
                if split == "train":
                    raise ConfigError(
                        f"run_type {self.run_type!r} trains, but dataset_config.{name}."
                        f"annotations.train is empty"
                    )
                logger.warning("dataset %s has no %s split; it is not evaluated", name, split)
                continue
            loader, sampler = build_dataloader_and_sampler(
                dataset, self.config, split, seed=self.data_seed
            )
            setattr(self, f"{split}_loader", loader)
            if split == "train":
                self.train_sampler = sampler
            logger.info(
                "%s/%s: %d samples, %d batches per rank", name, split, len(dataset), len(loader)
            )

        self.update_frequency = int(self.training_config.get("update_frequency", 1))
        if self.update_frequency < 1:
            raise ConfigError(
                f"training.update_frequency must be >= 1, got {self.update_frequency}"
            )
        # Read once: OmegaConf lookups cost tens of microseconds each.
        self.evaluation_interval = int(self.training_config.evaluation_interval)
        self.exit_on_nan_losses = bool(self.training_config.get("exit_on_nan_losses", True))
        self.max_updates, self.max_epochs = self._training_length()

    def _training_length(self):
        max_updates = self.training_config.get("max_updates")
        max_epochs = self.training_config.get("max_epochs")
        if max_updates is None and max_epochs is None:
            raise ConfigError("set training.max_updates or training.max_epochs")
        if self.train_loader is None:
            return int(max_updates or 0), max_epochs
        self.batches_per_epoch = len(self.train_loader)
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"dataset {self.dataset_name}: the train split ({len(self.train_loader.dataset)} "
                f"samples) holds less than one batch of {self.train_loader.batch_size} per process "
                f"(training.batch_size, training.drop_last)"
            )
        per_epoch = math.ceil(self.batches_per_epoch / self.update_frequency)
        limits = [int(max_updates)] if max_updates is not None else []
        if max_epochs is not None:
            limits.append(int(math.ceil(float(max_epochs) * per_epoch)))
        return min(limits), max_epochs

    def _load_model(self):
        name = self.config.get("model")
        if not name:
            raise ConfigError("no model given: pass model=<name>")
        node = self.config.model_config.get(name)
        node = OmegaConf.create(
            OmegaConf.to_container(node, resolve=True) if node is not None else {}
        )
        with open_dict(node):
            node.model = name
        self.model_name = name
        self.model = build_model(node).to(self.device)
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        logger.info("model %s: %d parameters, %d trainable", name, total, trainable)

    def _configure_precision(self):
        training = self.training_config
        fp16, bf16 = bool(training.get("fp16", False)), bool(training.get("bf16", False))
        if fp16 and bf16:
            raise ConfigError("training.fp16 and training.bf16 are both true; choose one")
        if fp16 and self.device.type != "cuda":
            logger.warning("training.fp16 needs CUDA; training in fp32 on %s", self.device)
            fp16 = False
        self.autocast_dtype = torch.float16 if fp16 else torch.bfloat16 if bf16 else None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.clip_norm = None
        if training.get("clip_gradients", False):
            if training.get("max_grad_l2_norm") is None:
                raise ConfigError(
                    "training.clip_gradients is true but training.max_grad_l2_norm is null"
                )
            self.clip_norm = float(training.max_grad_l2_norm)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _load_metrics(self):
        """``evaluation.metrics``: names or ``{type, params}`` nodes of registered metrics."""
        self.metrics = []
        for index, entry in enumerate(self.config.evaluation.get("metrics") or []):
            if isinstance(entry, str):
                entry = OmegaConf.create({"type": entry})
            metric = build_from_type_params("metric", entry, f"evaluation.metrics[{index}]")
            self.metrics.append(metric)
        self.required_fields = []
        for metric in self.metrics:
            for field in getattr(metric, "required_params", []):
                if field not in self.required_fields:
                    self.required_fields.append(field)

    def _build_callbacks(self):
        """The built-in callbacks, then those of ``training.callbacks``."""
        training = self.training_config
        early_stop = training.early_stop
        criteria = early_stop.get("criteria", "total_loss")
        minimize = early_stop.get("minimize", True)
        enabled = bool(early_stop.get("enabled", False))
        if enabled and "val" not in self.run_type:
            logger.warning(
                "training.early_stop.enabled has no effect: run_type %r never validates",
                self.run_type,
            )
        tensorboard_dir = None
        if training.get("tensorboard", False):
            tensorboard_dir = self.config.env.get("tensorboard_logdir") or os.path.join(
                self.save_dir, "logs", "tensorboard"
            )
        # The scheduler steps before the checkpoint saves it; the best value is recorded
        # before early stopping reads it.
        callbacks = [
            LRSchedulerCallback(self.scheduler),
            CheckpointCallback(
                self.checkpointer,
                self.state,
                interval=training.checkpoint_interval,
                final_weights=self.config.checkpoint.get("final_weights", "best"),
            ),
            LogisticsCallback(
                self.state,
                self.optimizer,
                self.max_updates,
                self.device,
                log_interval=training.log_interval,
                tensorboard_dir=tensorboard_dir,
                progress_bar=training.get("progress_bar", False),
            ),
            BestCheckpointCallback(
                self.checkpointer, self.state, criteria, minimize, required=enabled
            ),
            EarlyStoppingCallback(
                self.state,
                self.request_stop,
                criteria,
                patience=early_stop.get("patience", 0),
                enabled=enabled,
            ),
        ]
        for index, entry in enumerate(training.get("callbacks") or []):
            callbacks.append(
                build_from_type_params(
                    "callback", entry, f"training.callbacks[{index}]", trainer=self
                )
            )
        keys = [cb.state_key for cb in callbacks if cb.state_key is not None]
        duplicated = {key for key in keys if keys.count(key) > 1}
        if duplicated:
            raise ConfigError(
                f"training.callbacks: callbacks with the same state key {sorted(duplicated)}"
            )
        return callbacks

    def _parallelize_model(self):
        if not self.distributed:
            return
        self.model = torch.nn.parallel.DistributedDataParallel(
            self.model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=bool(self.training_config.get("find_unused_parameters", False)),
        )

    def _emit(self, hook, **kwargs):
        for callback in self.callbacks:
            getattr(callback, hook)(**kwargs)

    def request_stop(self, reason):
        """Ask the training loop to stop after the current update (callbacks call this)."""
        self.should_stop = True
        self.stop_reason = reason

    # =============================================================== training
    def train(self):
        """Run what ``run_type`` asks for: training (with validation), then evaluation."""
        try:
            if "train" in self.run_type:
                self._emit("on_train_start")
                with self.interrupt:
                    self.training_loop()
                if self.interrupted:
                    self._save_interrupted()
                self._emit("on_train_end")
            self.inference()
        finally:
            self._emit("teardown")

    def training_loop(self):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        micro_batches, accumulated = 0, None
        while not self._training_done():
            fresh_epoch, trained = self.state.batches_in_epoch == 0, False
            self._start_epoch()
            for batch in self.train_loader:
                self.state.batches_in_epoch += 1
                self.state.current_iteration += 1
                self.state.skipped_in_epoch += int(batch.get("skipped_samples", 0))
                if self._skip_batch(batch):
                    continue
                trained = True
                micro_batches += 1
                is_update = micro_batches == self.update_frequency
                losses = self.run_training_batch(batch, sync_gradients=is_update)
                accumulated = losses if accumulated is None else _add_reports(accumulated, losses)
                if not is_update:
                    continue
                self._finish_update(_scale_report(accumulated, 1.0 / self.update_frequency))
                micro_batches, accumulated = 0, None
                if self._training_done():
                    break
            if self.state.batches_in_epoch < self.batches_per_epoch:
                break  # stopped mid-epoch
            if fresh_epoch and not trained:
                raise DataError(
                    f"every sample of epoch {self.state.current_epoch} of dataset "
                    f"{self.dataset_name} was skipped as unreadable"
                )
            self._end_epoch()
        if self.interrupted:
            return
        if self.stop_reason:
            logger.info("%s", self.stop_reason)
        if self.val_loader is not None and self._last_validation != self.state.num_updates:
            self.validate()

    def _training_done(self):
        if self.should_stop or self._interrupt_requested():
            return True
        if self.state.num_updates >= self.max_updates:
            return True
        return self.max_epochs is not None and self.state.current_epoch >= self.max_epochs

    def _interrupt_requested(self):
        """Whether Ctrl-C reached any rank (so that all ranks stop at the same update)."""
        requested = self.interrupt.requested
        if self.distributed:
            flag = torch.tensor(float(requested), device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = bool(flag.item())
        self.interrupted = requested
        return requested

    def _save_interrupted(self):
        self.checkpointer.save_current()
        update = self.state.num_updates
        logger.warning("interrupted: saved %s at update %d", self.checkpointer.current_path, update)
        raise TrainingInterrupted(
            f"interrupted after update {update}: saved {self.checkpointer.current_path}; "
            f"continue with checkpoint.resume=true"
        )

    def _start_epoch(self):
        epoch = self.state.current_epoch
        self.train_sampler.set_epoch(epoch)
        self.train_sampler.skip(self.state.batches_in_epoch * self.train_loader.batch_size)
        self.train_loader.generator.manual_seed(self.data_seed + epoch)

    def _end_epoch(self):
        skipped = sum(all_gather_object(self.state.skipped_in_epoch))
        self._emit("on_epoch_end", epoch=self.state.current_epoch, skipped_samples=skipped)
        self.state.current_epoch += 1
        self.state.batches_in_epoch = 0
        self.state.skipped_in_epoch = 0

    def _skip_batch(self, batch):
        """Skip a batch whose samples were all unreadable, on every rank at once."""
        empty = is_batch_empty(batch)
        if self.distributed:
            flag = torch.tensor(float(empty), device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            empty = bool(flag.item())
        return empty

    def run_training_batch(self, batch, sync_gradients=True):
        """Forward and backward of one (micro-)batch; returns the detached losses and the
        model's ``train_metrics`` (``{"losses", "total_loss", "metrics"}``, 0-dim tensors).

        Gradients are averaged over ranks only on the last micro-batch of an update
        (``no_sync`` on the others).
        """
        batch = to_device(batch, self.device)
        no_sync = self.distributed and not sync_gradients
        with self.model.no_sync() if no_sync else contextlib.nullcontext():
            with self._autocast():
                output = self.model(batch)
            losses = output["losses"]
            loss = sum_losses(losses)
            if self.exit_on_nan_losses:
                self._check_finite(loss, losses)
            scaled = loss / self.update_frequency if self.update_frequency > 1 else loss
            self.scaler.scale(scaled).backward()
        return {
            "losses": _detached_means(losses),
            "total_loss": loss.detach(),
            "metrics": _detached_means(output.get("train_metrics") or {}),
        }

    def _check_finite(self, loss, losses):
        if torch.isfinite(loss).item():
            return
        bad = {
            name: value.detach().float().mean().item()
            for name, value in losses.items()
            if not torch.isfinite(value).all()
        }
        raise NonFiniteLossError(
            f"non-finite loss at update {self.state.num_updates + 1} (epoch "
            f"{self.state.current_epoch}, batch {self.state.batches_in_epoch}): {bad}; "
            f"stopping (training.exit_on_nan_losses)"
        )

    def _finish_update(self, report):
        if self.clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.num_updates += 1
        self._emit("on_update_end", report=report)
        interval = self.evaluation_interval
        if self.val_loader is not None and interval > 0 and self.state.num_updates % interval == 0:
            self.validate()

    # ============================================================= evaluation
    def validate(self):
        """Evaluate the val split during training; callbacks may request a stop."""
        metrics = self.evaluation_loop("val")
        self._last_validation = self.state.num_updates
        self._emit("on_validation_end", metrics=metrics)
        self.should_stop = broadcast_object(self.should_stop)

    def inference(self):
        """Evaluation outside training: val (run_type without train), test (inference)."""
        if "train" not in self.run_type and self.val_loader is not None:
            self._emit("on_test_end", split="val", metrics=self.evaluation_loop("val"))
        if self.test_loader is not None:
            self._emit("on_test_end", split="test", metrics=self.evaluation_loop("test"))

    def evaluation_loop(self, split):
        """Metrics of ``split`` computed on the outputs of all ranks.

        Under ``no_grad`` and in eval mode, each batch's ``required_params`` of the metrics
        are taken from the model output, else from the batch (a batch may lack some, e.g.
        query-only batches), and kept on CPU (floating tensors as float32). They are
        gathered from every rank (each sample once; the eval sampler does not pad),
        concatenated (tensors on dim 0, lists joined) and passed to
        ``metric.calculate(gathered) -> {key: float}``, logged as ``<split>/<dataset>/<key>``.
        Model losses, when the model returns any in eval mode, are averaged over samples
        as ``<split>/<dataset>/<loss>`` and summed as ``<split>/total_loss``.
        """
        fields, loss_sums, count = self._collect_outputs(split)
        gathered = _concat_ranks(all_gather_object(fields))
        prefix = f"{split}/{self.dataset_name}"
        metrics = {}
        for metric in self.metrics:
            required = getattr(metric, "required_params", [])
            missing = [name for name in required if len(gathered[name]) == 0]
            if missing:
                raise ConfigError(
                    f"metric {type(metric).__name__} needs {missing}, which neither the model "
                    f"outputs nor the {split} batches of {self.dataset_name} hold"
                )
            required = {name: gathered[name] for name in required}
            for key, value in metric.calculate(required).items():
                metrics[f"{prefix}/{key}"] = float(value)
        sums_and_counts = all_gather_object((loss_sums, count))
        total = sum(c for _, c in sums_and_counts)
        if total and loss_sums:
            means = {
                name: sum(sums.get(name, 0.0) for sums, _ in sums_and_counts) / total
                for name in loss_sums
            }
            for name, value in means.items():
                metrics[f"{prefix}/{name}"] = value
            metrics[f"{split}/total_loss"] = sum(means.values())
        return metrics

    def _collect_outputs(self, split):
        """This rank's ``({field: [cpu chunk, ...]}, {loss: sum over samples}, samples)``."""
        model = unwrap_model(self.model)
        was_training = model.training
        model.eval()
        fields = {field: [] for field in self.required_fields}
        loss_sums, count = {}, 0
        loader = getattr(self, f"{split}_loader")
        with torch.no_grad():
            for batch in _progress(loader, split, self.training_config.get("progress_bar", False)):
                if is_batch_empty(batch):
                    continue
                batch = to_device(batch, self.device)
                with self._autocast():
                    output = model(batch)
                size = batch.get_batch_size()
                count += size
                for name, value in output["losses"].items():
                    loss_sums[name] = loss_sums.get(name, 0.0) + value.float().mean().item() * size
                for field in self.required_fields:
                    value = output[field] if field in output else batch.get(field)
                    if value is not None:
                        fields[field].append(_to_cpu(value))
        model.train(was_training)
        return fields, loss_sums, count


def _detached_means(values):
    return {name: value.detach().float().mean() for name, value in values.items()}


def _add_reports(total, report):
    """Sum of two ``run_training_batch`` reports (names missing in one count as 0)."""
    return {
        "losses": _add_named(total["losses"], report["losses"]),
        "total_loss": total["total_loss"] + report["total_loss"],
        "metrics": _add_named(total["metrics"], report["metrics"]),
    }


def _add_named(a, b):
    return {name: a.get(name, 0) + b.get(name, 0) for name in {**a, **b}}


def _scale_report(report, factor):
    if factor == 1:
        return report
    return {
        "losses": {k: v * factor for k, v in report["losses"].items()},
        "total_loss": report["total_loss"] * factor,
        "metrics": {k: v * factor for k, v in report["metrics"].items()},
    }


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.float() if value.is_floating_point() else value
    return list(value)


def _concat_ranks(per_rank):
    """``[{field: [chunk, ...]}, ...]`` (one dict per rank) -> ``{field: tensor or list}``."""
    chunks = {name: [] for name in per_rank[0]}
    for fields in per_rank:
        for name, values in fields.items():
            chunks[name].extend(values)
    gathered = {}
    for name, values in chunks.items():
        if values and isinstance(values[0], torch.Tensor):
            gathered[name] = torch.cat(values, 0)
        else:
            gathered[name] = [item for chunk in values for item in chunk]
    return gathered


def _progress(loader, split, enabled):
    if not (enabled and is_main()):
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=split, unit="batch", leave=False, dynamic_ncols=True)
