"""``Callback``: hooks the trainer calls at fixed points of a run.

Every hook is a no-op here; subclasses override what they need. A callback that keeps
state across a restart returns it from ``state_dict()`` (tensors and plain containers
only) and gets it back through ``load_state_dict()``; the checkpoint stores it under
``state_key`` (a ``state_key`` of None: nothing is stored). User callbacks are registered
with ``@registry.register_callback(name)`` and listed in
``training.callbacks: [{type: name, params: {...}}]``; they are built as
``cls(params, trainer)`` and this base keeps both as ``self.config`` and ``self.trainer``.
The built-in callbacks take their collaborators (state, optimizer, checkpointer, ...) as
constructor arguments instead.

Hook order in a training run::

    on_init_end -> on_train_start -> (on_update_end [-> on_validation_end])*
    -> on_epoch_end* -> on_train_end -> on_test_end* -> teardown
"""


class Callback:
    def __init__(self, config=None, trainer=None):
        self.config = config
        self.trainer = trainer

    @property
    def state_key(self):
        return type(self).__name__

    def on_init_end(self):
        """Setup is done (model, optimizer, data, resume)."""

    def on_train_start(self):
        """Right before the first training batch."""

    def on_update_end(self, report):
        """After each optimizer update; ``report`` = ``{"losses": {name: t}, "total_loss": t,
        "metrics": {name: t}}`` (this rank's loss values and the model's ``train_metrics``,
        averaged over the accumulated micro-batches; 0-dim tensors)."""

    def on_validation_end(self, metrics):
        """After a validation pass during training; ``metrics`` = ``{"val/...": float}``."""

    def on_epoch_end(self, epoch, skipped_samples):
        """After the last batch of ``epoch``; ``skipped_samples`` summed over ranks."""

    def on_train_end(self):
        """After the last update (and the final validation)."""

    def on_test_end(self, split, metrics):
        """After evaluating ``split`` outside training (run_type val / inference)."""

    def teardown(self):
        """Release resources (files, progress bars); always the last hook."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        """Restore what ``state_dict`` returned."""
