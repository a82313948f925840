"""``TrainerState``: the counters a run needs to continue exactly where it stopped."""
import dataclasses
from dataclasses import dataclass
from typing import Optional


@dataclass
class TrainerState:
    """Progress of a run; saved in every checkpoint and restored on resume.

    Attributes:
        num_updates: optimizer updates done.
        current_epoch: epoch being trained (0-based).
        current_iteration: batches taken from the train loader over the whole run.
        batches_in_epoch: batches taken from the train loader in ``current_epoch``; a resumed
            run re-seeds the sampler with ``current_epoch`` and skips this many batches.
        skipped_in_epoch: samples the dataset skipped (``on_error: skip``) in this epoch.
        best_update: update of the best validation value so far (0 when none).
        best_metric_value: that value, or None before the first validation.
    """

    num_updates: int = 0
    current_epoch: int = 0
    current_iteration: int = 0
    batches_in_epoch: int = 0
    skipped_in_epoch: int = 0
    best_update: int = 0
    best_metric_value: Optional[float] = None

    def state_dict(self):
        return dataclasses.asdict(self)

    def load_state_dict(self, state):
        names = {field.name for field in dataclasses.fields(self)}
        for key, value in state.items():
            if key in names:
                setattr(self, key, value)
