"""Tracks the best validation value, saves ``best.ckpt`` and stops a run that stalls."""
import logging
import math

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.trainers.callbacks.base import Callback

logger = logging.getLogger(__name__)


@registry.register_callback("early_stopping")
class EarlyStoppingCallback(Callback):
    """``training.early_stop``: ``criteria`` (``total_loss`` or ``<dataset>/<metric key>``,
    looked up as ``val/<criteria>``), ``minimize``, ``patience`` (updates) and ``enabled``.

    Every validation that improves the value saves ``best.ckpt``. The run stops only when
    ``enabled`` and ``patience`` updates passed since the best value. A criteria of the
    form ``<dataset>/<metric type>/<key>`` (MMF's naming) also matches ``val/<dataset>/<key>``.
    A criteria that validation does not produce raises when ``enabled`` and is ignored
    with a warning otherwise.
    """

    def __init__(self, config, trainer):
        super().__init__(config, trainer)
        early_stop = config.training.early_stop
        self.enabled = bool(early_stop.get("enabled", False))
        self.criteria = str(early_stop.get("criteria", "total_loss"))
        self.minimize = bool(early_stop.get("minimize", True))
        self.patience = int(early_stop.get("patience", 0))
        self._warned = False

    def _lookup(self, metrics):
        key = self.criteria if self.criteria.startswith("val/") else f"val/{self.criteria}"
        if key in metrics:
            return metrics[key]
        parts = key.split("/")
        if len(parts) == 4:
            short = "/".join(parts[:2] + parts[3:])
            if short in metrics:
                return metrics[short]
        message = (
            f"training.early_stop.criteria {self.criteria!r} is not among the validation "
            f"values {sorted(metrics)}"
        )
        if self.enabled:
            raise ConfigError(message)
        if not self._warned:
            logger.warning("%s; best.ckpt is not tracked", message)
            self._warned = True
        return None

    def on_validation_end(self, metrics):
        value = self._lookup(metrics)
        if value is None or math.isnan(value):
            return
        state = self.trainer.state
        best = state.best_metric_value
        improved = best is None or (value < best if self.minimize else value > best)
        if improved:
            state.best_metric_value = float(value)
            state.best_update = state.num_updates
            self.trainer.checkpoint.save(current=False, best=True)
            logger.info("new best %s = %.6g at update %d", self.criteria, value, state.num_updates)
        elif self.enabled and state.num_updates - state.best_update > self.patience:
            self.trainer.request_stop(
                f"early stopping: {self.criteria} did not improve for more than "
                f"{self.patience} updates (best {best:.6g} at update {state.best_update})"
            )

    def state_dict(self):
        return {"criteria": self.criteria, "minimize": self.minimize}

    def load_state_dict(self, state):
        if state.get("criteria") != self.criteria or state.get("minimize") != self.minimize:
            logger.warning(
                "early-stopping criteria changed since the checkpoint (%s, minimize=%s); "
                "forgetting the previous best value",
                state.get("criteria"),
                state.get("minimize"),
            )
            self.trainer.state.best_metric_value = None
            self.trainer.state.best_update = self.trainer.state.num_updates
