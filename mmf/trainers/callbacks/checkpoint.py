"""Saves ``current.ckpt`` periodically and writes the final model at the end of training."""
from mmf.common.registry import registry
from mmf.trainers.callbacks.base import Callback


@registry.register_callback("checkpoint")
class CheckpointCallback(Callback):
    """Every ``training.checkpoint_interval`` updates: ``current.ckpt`` + history copy.

    At the end of training: a last ``current.ckpt`` (so ``checkpoint.resume`` can extend
    the run), then the weights of ``best.ckpt`` if validation produced one, then
    ``<model>_final.pth``.
    """

    def __init__(self, config, trainer):
        super().__init__(config, trainer)
        self.interval = int(config.training.checkpoint_interval)
        self.last_saved_update = None

    def on_update_end(self, report):
        num_updates = self.trainer.state.num_updates
        if self.interval > 0 and num_updates % self.interval == 0:
            self.trainer.checkpoint.save(history=True)
            self.last_saved_update = num_updates

    def on_train_end(self):
        checkpoint = self.trainer.checkpoint
        if self.last_saved_update != self.trainer.state.num_updates:
            checkpoint.save(history=True)
            self.last_saved_update = self.trainer.state.num_updates
        checkpoint.load_best_model()
        checkpoint.finalize()
