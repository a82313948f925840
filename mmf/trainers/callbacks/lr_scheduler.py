"""Steps the learning-rate scheduler once per optimizer update."""
from mmf.common.registry import registry
from mmf.trainers.callbacks.base import Callback


@registry.register_callback("lr_scheduler")
class LRSchedulerCallback(Callback):
    """Runs before the checkpoint callback so that a saved scheduler is already stepped."""

    def on_update_end(self, report):
        if self.trainer.scheduler is not None:
            self.trainer.scheduler.step()
