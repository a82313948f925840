"""Stops a run whose validation value has not improved for ``patience`` updates."""
import math

from mmf.common.registry import registry
from mmf.trainers.callbacks.base import Callback
from mmf.trainers.callbacks.best_checkpoint import criteria_value


@registry.register_callback("early_stopping")
class EarlyStoppingCallback(Callback):
    """``training.early_stop``: when ``enabled``, calls ``stop(reason)`` after a validation
    once more than ``patience`` updates passed since ``state.best_update``.

    The best value is tracked by ``BestCheckpointCallback`` (same ``criteria``), which runs
    before this callback; validations whose ``criteria`` value is NaN never stop the run.
    Keeps no state of its own.
    """

    state_key = None

    def __init__(self, state, stop, criteria="total_loss", patience=0, enabled=False):
        super().__init__()
        self.state = state
        self.stop = stop
        self.criteria = str(criteria)
        self.patience = int(patience)
        self.enabled = bool(enabled)

    def on_validation_end(self, metrics):
        if not self.enabled:
            return
        value = criteria_value(metrics, self.criteria)
        if value is None or math.isnan(value):
            return
        state = self.state
        if state.num_updates - state.best_update > self.patience:
            self.stop(
                f"early stopping: {self.criteria} did not improve for more than "
                f"{self.patience} updates (best {state.best_metric_value:.6g} at update "
                f"{state.best_update})"
            )
