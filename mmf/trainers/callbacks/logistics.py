"""Progress reporting: log lines, a rank-0 tqdm bar and TensorBoard scalars."""
import datetime
import logging
import time

import torch

from mmf.common.registry import registry
from mmf.trainers.callbacks.base import Callback
from mmf.utils.distributed import all_gather_object, is_main

logger = logging.getLogger(__name__)


@registry.register_callback("logistics")
class LogisticsCallback(Callback):
    """Every ``log_interval`` updates (``training.log_interval``): losses and the model's
    ``train_metrics`` (each averaged over updates and ranks), lr, updates per second, ETA
    (and peak GPU memory) to the log and, with a ``tensorboard_dir`` (the trainer's:
    ``env.tensorboard_logdir`` or ``save_dir/logs/tensorboard`` when
    ``training.tensorboard``), as ``train/<name>`` scalars. ``progress_bar``
    (``training.progress_bar``) shows a tqdm bar on rank 0 (updates, ETA, it/s, loss, lr).

    State: the training time of earlier sessions of a resumed run.
    """

    def __init__(
        self, state, optimizer, max_updates, device, log_interval, tensorboard_dir=None,
        progress_bar=False,
    ):
        """``tensorboard_dir``: where to write TensorBoard scalars (rank 0), None for none."""
        super().__init__()
        self.state = state
        self.optimizer = optimizer
        self.max_updates = max_updates
        self.device = device
        self.log_interval = max(1, int(log_interval))
        self.use_progress_bar = bool(progress_bar) and is_main()
        self.tensorboard_dir = tensorboard_dir if is_main() else None
        self.pending = []
        self.writer = None
        self.progress_bar = None
        self.previous_train_seconds = 0.0
        self.session_start = None
        self.interval_start = None
        self.interval_start_update = 0

    # ------------------------------------------------------------------ hooks
    def on_train_start(self):
        state = self.state
        self.session_start = self.interval_start = time.perf_counter()
        self.interval_start_update = state.num_updates
        if self.use_progress_bar:
            from tqdm import tqdm

            self.progress_bar = tqdm(
                total=self.max_updates,
                initial=state.num_updates,
                desc="train",
                unit="update",
                dynamic_ncols=True,
            )
        logger.info(
            "training from update %d to %d (epoch %d)",
            state.num_updates,
            self.max_updates,
            state.current_epoch,
        )

    def on_update_end(self, report):
        # Keep tensors until the log step: no device sync on the other updates.
        self.pending.append(
            {"total_loss": report["total_loss"], **report["losses"], **report.get("metrics", {})}
        )
        if self.progress_bar is not None:
            self.progress_bar.update(1)
        num_updates = self.state.num_updates
        if num_updates % self.log_interval == 0 or num_updates >= self.max_updates:
            self._log_training(num_updates)

    def _log_training(self, num_updates):
        # Loss names may differ between updates and ranks (sampled tasks): average each
        # name over the updates and ranks that have it.
        names = sorted(set().union(*self.pending))
        local = {
            name: torch.stack([p[name].float() for p in self.pending if name in p]).mean().item()
            for name in names
        }
        self.pending = []
        per_rank = all_gather_object(local)
        names = sorted(set().union(*per_rank))
        means = {
            f"train/{name}": sum(r[name] for r in per_rank if name in r)
            / sum(name in r for r in per_rank)
            for name in names
        }
        now = time.perf_counter()
        done = num_updates - self.interval_start_update
        ups = done / max(now - self.interval_start, 1e-9)
        self.interval_start, self.interval_start_update = now, num_updates
        lr = self.optimizer.param_groups[0]["lr"]
        if not is_main():
            return
        remaining = max(self.max_updates - num_updates, 0)
        eta = datetime.timedelta(seconds=int(remaining / ups)) if ups > 0 else "?"
        values = {**means, "train/lr": lr, "train/ups": ups}
        if torch.cuda.is_available() and self.device.type == "cuda":
            values["train/max_mem_mb"] = (
                torch.cuda.max_memory_allocated(self.device) / 2**20
            )
        text = ", ".join(f"{key[6:]}: {_fmt(value)}" for key, value in values.items())
        logger.info(
            "progress: %d/%d, epoch: %d, %s, eta: %s",
            num_updates,
            self.max_updates,
            self.state.current_epoch,
            text,
            eta,
        )
        if self.progress_bar is not None:
            self.progress_bar.set_postfix(loss=f"{means['train/total_loss']:.4f}", lr=f"{lr:.3g}")
        self._write_scalars(values, num_updates)

    def on_validation_end(self, metrics):
        self._log_metrics("validation", metrics)

    def on_test_end(self, split, metrics):
        self._log_metrics(f"evaluation of {split}", metrics)

    def _log_metrics(self, what, metrics):
        if not is_main():
            return
        num_updates = self.state.num_updates
        text = ", ".join(f"{key}: {_fmt(value)}" for key, value in metrics.items()) or "no metrics"
        logger.info("%s at update %d: %s", what, num_updates, text)
        self._write_scalars(metrics, num_updates)

    def on_epoch_end(self, epoch, skipped_samples):
        if skipped_samples:
            logger.warning(
                "epoch %d done: %d samples were skipped (unreadable)", epoch, skipped_samples
            )
        else:
            logger.info("epoch %d done", epoch)

    def on_train_end(self):
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None
        if self.session_start is not None:
            self.previous_train_seconds += time.perf_counter() - self.session_start
            self.session_start = None
        logger.info(
            "training finished at update %d; training time %s",
            self.state.num_updates,
            datetime.timedelta(seconds=int(self.previous_train_seconds)),
        )
        if self.writer is not None:
            self.writer.flush()

    def teardown(self):
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _write_scalars(self, values, step):
        if self.tensorboard_dir is None:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.tensorboard_dir)
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def state_dict(self):
        elapsed = self.previous_train_seconds
        if self.session_start is not None:
            elapsed += time.perf_counter() - self.session_start
        return {"train_seconds": elapsed}

    def load_state_dict(self, state):
        self.previous_train_seconds = float(state.get("train_seconds", 0.0))


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)
