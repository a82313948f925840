"""``BaseModel``: the contract every registered model follows.

A model is built from its own config node (``model_config.<name>`` with ``model: <name>``
added), in two steps so that construction stays cheap: ``cls(config)`` then ``build()``.
``forward(sample_list)`` returns a dict; during training it holds ``losses``, a dict of
scalar tensors that the trainer sums.
"""
import collections.abc

from torch import nn


class BaseModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config

    @classmethod
    def config_path(cls):
        """Path of the model's default yaml, relative to the ``mmf`` package, or None."""
        return None

    def build(self):
        raise NotImplementedError(f"{type(self).__name__} must implement build()")

    def init_losses(self):
        """Hook for models whose losses come from config; RICE computes its own."""

    def get_optimizer_parameters(self, config):
        """Parameter groups for the optimizer; ``config`` is the whole run config."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def format_state_key(self, key):
        """Map a key of an older checkpoint onto this model's key; identity by default."""
        return key

    def __call__(self, sample_list, *args, **kwargs):
        output = super().__call__(sample_list, *args, **kwargs)
        if not isinstance(output, collections.abc.MutableMapping):
            raise TypeError(
                f"{type(self).__name__}.forward must return a dict, got {type(output).__name__}"
            )
        output.setdefault("losses", {})
        return output
