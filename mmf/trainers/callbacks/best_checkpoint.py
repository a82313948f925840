"""Tracks the best validation value and saves ``best.ckpt`` when it improves."""
import logging
import math

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.trainers.callbacks.base import Callback

logger = logging.getLogger(__name__)


def criteria_value(metrics, criteria):
    """``metrics["val/<criteria>"]``, or None when validation did not produce it.

    ``criteria`` is ``total_loss`` or ``<dataset>/<metric key>`` (a leading ``val/`` is
    allowed); MMF's ``<dataset>/<metric type>/<key>`` also matches ``val/<dataset>/<key>``.
    """
    key = criteria if criteria.startswith("val/") else f"val/{criteria}"
    if key in metrics:
        return metrics[key]
    parts = key.split("/")
    if len(parts) == 4:
        return metrics.get("/".join(parts[:2] + parts[3:]))
    return None


@registry.register_callback("best_checkpoint")
class BestCheckpointCallback(Callback):
    """After every validation: when the value of ``criteria`` improves on
    ``state.best_metric_value`` (lower with ``minimize``), records it in ``state``
    (``best_metric_value``, ``best_update``) and saves ``best.ckpt`` through
    ``checkpointer``; whether or not early stopping is enabled.

    The trainer builds it from ``training.early_stop.criteria`` and ``minimize``. A
    criteria that validation does not produce raises ``ConfigError`` when ``required``
    (early stopping depends on it) and is ignored with one warning otherwise.

    State: the criteria the best value was measured with; a resumed run whose criteria
    differ forgets the previous best value.
    """

    # Checkpoints store this state under the name of the callback that wrote best.ckpt
    # before this one existed, so older runs resume with their best value.
    state_key = "EarlyStoppingCallback"

    def __init__(self, checkpointer, state, criteria="total_loss", minimize=True, required=False):
        super().__init__()
        self.checkpointer = checkpointer
        self.state = state
        self.criteria = str(criteria)
        self.minimize = bool(minimize)
        self.required = bool(required)
        self._warned = False

    def on_validation_end(self, metrics):
        value = criteria_value(metrics, self.criteria)
        if value is None:
            self._missing(metrics)
            return
        best = self.state.best_metric_value
        if math.isnan(value) or not (
            best is None or (value < best if self.minimize else value > best)
        ):
            return
        self.state.best_metric_value = float(value)
        self.state.best_update = self.state.num_updates
        self.checkpointer.save_best()
        logger.info(
            "new best %s = %.6g at update %d", self.criteria, value, self.state.num_updates
        )

    def _missing(self, metrics):
        message = (
            f"training.early_stop.criteria {self.criteria!r} is not among the validation "
            f"values {sorted(metrics)}"
        )
        if self.required:
            raise ConfigError(message)
        if not self._warned:
            logger.warning("%s; best.ckpt is not tracked", message)
            self._warned = True

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
            self.state.best_metric_value = None
            self.state.best_update = self.state.num_updates
