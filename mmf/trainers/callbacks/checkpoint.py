"""Saves ``current.ckpt`` periodically and writes ``<model>_final.pth`` at the end of training."""
import logging

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.trainers.callbacks.base import Callback

logger = logging.getLogger(__name__)

FINAL_WEIGHTS = ("last", "best")


@registry.register_callback("checkpoint")
class CheckpointCallback(Callback):
    """Every ``interval`` updates (``training.checkpoint_interval``; 0 = never):
    ``current.ckpt`` + history copy.

    At the end of training: a last ``current.ckpt`` (so ``checkpoint.resume`` can extend
    the run), then ``<model>_final.pth`` with the weights ``final_weights``
    (``checkpoint.final_weights``) names: ``last``, those of the last update, or ``best``,
    those of ``best.ckpt`` when validation wrote one (else the last ones). The model keeps
    these weights for the evaluation that follows training. The choice is logged.
    """

    def __init__(self, checkpointer, state, interval, final_weights="best"):
        super().__init__()
        if final_weights not in FINAL_WEIGHTS:
            raise ConfigError(
                f"checkpoint.final_weights: expected one of {list(FINAL_WEIGHTS)}, "
                f"got {final_weights!r}"
            )
        self.checkpointer = checkpointer
        self.state = state
        self.interval = int(interval)
        self.final_weights = final_weights
        self.last_saved_update = None

    def on_update_end(self, report):
        num_updates = self.state.num_updates
        if self.interval > 0 and num_updates % self.interval == 0:
            self.checkpointer.save_current(history=True)
            self.last_saved_update = num_updates

    def on_train_end(self):
        num_updates = self.state.num_updates
        if self.last_saved_update != num_updates:
            self.checkpointer.save_current(history=True)
            self.last_saved_update = num_updates
        if self.final_weights == "best" and self.checkpointer.load_best_weights():
            logger.info(
                "final weights (checkpoint.final_weights=best): those of update %d, from "
                "best.ckpt",
                self.state.best_update,
            )
        elif self.final_weights == "best":
            logger.info(
                "final weights (checkpoint.final_weights=best): no best.ckpt was written; "
                "those of the last update, %d",
                num_updates,
            )
        else:
            logger.info(
                "final weights (checkpoint.final_weights=last): those of the last update, %d",
                num_updates,
            )
        self.checkpointer.finalize()
