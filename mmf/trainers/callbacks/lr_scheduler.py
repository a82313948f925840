"""Steps the learning-rate scheduler once per optimizer update."""
from mmf.common.registry import registry
from mmf.trainers.callbacks.base import Callback


@registry.register_callback("lr_scheduler")
class LRSchedulerCallback(Callback):
    """Steps ``scheduler`` (None: nothing to do). The trainer puts it before the checkpoint
    callback so that a saved scheduler is already stepped."""

    def __init__(self, scheduler):
        super().__init__()
        self.scheduler = scheduler

    def on_update_end(self, report):
        if self.scheduler is not None:
            self.scheduler.step()
