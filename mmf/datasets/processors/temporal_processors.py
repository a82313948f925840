"""``temporal_masked_slice``: pick at most F frames of a clip and pad them to F slots.

Semantics (those of the original RICE processor), with F = ``max_temporal_len``:

- one input frame goes to slot 0 and nothing else happens (gallery images seen as videos);
- more than F frames: ``slice_pos`` 0 keeps the first F, 1 the last F, 2 the indices
  ``int(linspace(0, n - 1, F))`` (first and last frame included);
- with ``use_augments`` (training only): ``augment_order`` 0 keeps the order, 1 reverses
  it, 2 shuffles it; then, if ``cut_tail`` and the slice holds exactly F frames, with
  probability 1/2 the clip is cut to its first ``F - floor(F * i / 10)`` frames for ``i``
  uniform in 0..9 (for F = 10: k uniform in 1..10, so P(all F kept) = 0.55);
- the kept frames fill the first slots of a zero tensor; ``video_temporal_mask`` is 1 there.

The dataset calls ``select`` first and decodes only the kept frames, then ``pad``.
"""
import numpy as np
import torch

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.datasets.processors.base import BaseProcessor


@registry.register_processor("temporal_masked_slice")
class TemporalMaskedSliceProcessor(BaseProcessor):
    def __init__(self, config, *args, **kwargs):
        super().__init__(config)
        self.max_temporal_len = int(config.get("max_temporal_len", 10))
        self.slice_pos = int(config.get("slice_pos", 2))
        self.augment_order = int(config.get("augment_order", 0))
        self.cut_tail = bool(config.get("cut_tail", True))
        if self.max_temporal_len < 1:
            raise ConfigError(
                f"temporal_masked_slice.max_temporal_len must be >= 1, got {self.max_temporal_len}"
            )
        if self.slice_pos not in (0, 1, 2):
            raise ConfigError(
                f"temporal_masked_slice.slice_pos must be 0, 1 or 2, got {self.slice_pos}"
            )
        if self.augment_order not in (0, 1, 2):
            raise ConfigError(
                f"temporal_masked_slice.augment_order must be 0, 1 or 2, got {self.augment_order}"
            )

    def select(self, num_frames, use_augments=False, generator=None):
        """Indices (into the clip's ``num_frames`` frames) of the frames to keep, in order."""
        if num_frames < 1:
            raise ValueError("a clip needs at least one frame")
        if num_frames == 1:
            return [0]
        length = self.max_temporal_len
        if num_frames <= length:
            indices = list(range(num_frames))
        elif self.slice_pos == 0:
            indices = list(range(length))
        elif self.slice_pos == 1:
            indices = list(range(num_frames - length, num_frames))
        else:
            indices = np.linspace(0, num_frames - 1, length).astype(np.int64).tolist()
        if not use_augments:
            return indices
        if self.augment_order == 1:
            indices = indices[::-1]
        elif self.augment_order == 2:
            order = torch.randperm(len(indices), generator=generator).tolist()
            indices = [indices[i] for i in order]
        if self.cut_tail and len(indices) == length:
            if int(torch.randint(10, (1,), generator=generator)) >= 5:
                tenths = int(torch.randint(10, (1,), generator=generator))
                indices = indices[: length - (length * tenths) // 10]
        return indices

    def pad(self, frames):
        """``frames`` ([k,...] tensor or k tensors, k <= F) -> ``video`` [F,...] zero-padded,
        ``video_temporal_mask`` [F] long."""
        count = len(frames)
        if not 0 < count <= self.max_temporal_len:
            raise ValueError(f"{count} frames do not fit in {self.max_temporal_len} slots")
        video = frames[0].new_empty((self.max_temporal_len,) + tuple(frames[0].shape))
        for slot, frame in enumerate(frames):
            video[slot] = frame
        video[count:].zero_()
        mask = torch.zeros(self.max_temporal_len, dtype=torch.long)
        mask[:count] = 1
        return {"video": video, "video_temporal_mask": mask}

    def __call__(self, video, use_augments=False, generator=None):
        """``video`` [n,...] -> dict(``video`` [F,...], ``video_temporal_mask`` [F])."""
        indices = self.select(video.size(0), use_augments, generator)
        return self.pad(video[indices])
