"""Registered learning-rate schedules, all ``LambdaLR`` stepped once per optimizer update.

Built as ``cls(optimizer, **scheduler.params)`` by ``mmf.utils.build.build_scheduler``. Each
schedule multiplies every parameter group's own base lr, so per-group lr ratios hold.
"""
import bisect
import math

from torch.optim.lr_scheduler import LambdaLR

from mmf.common.registry import registry


@registry.register_scheduler("warmup_cosine")
class WarmupCosineScheduler(LambdaLR):
    """Linear warmup from 0, then cosine decay to 0 at ``num_training_steps``.

    The same factor as ``transformers.get_cosine_schedule_with_warmup``: ``step / W`` for
    ``step < W``, then ``max(0, 0.5 * (1 + cos(pi * 2 * num_cycles * progress)))``.
    """

    def __init__(
        self, optimizer, num_warmup_steps, num_training_steps, num_cycles=0.5, last_epoch=-1
    ):
        # Fail here on a malformed value, not at the first step past the warmup.
        num_warmup_steps, num_training_steps = int(num_warmup_steps), int(num_training_steps)
        num_cycles = float(num_cycles)

        def factor(step):
            if step < num_warmup_steps:
                return float(step) / float(max(1, num_warmup_steps))
            progress = float(step - num_warmup_steps) / float(
                max(1, num_training_steps - num_warmup_steps)
            )
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))

        super().__init__(optimizer, factor, last_epoch)


@registry.register_scheduler("warmup_linear")
class WarmupLinearScheduler(LambdaLR):
    """Linear warmup from 0, then linear decay to 0 at ``num_training_steps``
    (``transformers.get_linear_schedule_with_warmup``)."""

    def __init__(self, optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
        num_warmup_steps, num_training_steps = int(num_warmup_steps), int(num_training_steps)

        def factor(step):
            if step < num_warmup_steps:
                return float(step) / float(max(1, num_warmup_steps))
            return max(
                0.0,
                float(num_training_steps - step)
                / float(max(1, num_training_steps - num_warmup_steps)),
            )

        super().__init__(optimizer, factor, last_epoch)


@registry.register_scheduler("multi_step")
class MultiStepScheduler(LambdaLR):
    """Multiply the lr by ``lr_ratio`` at each step in ``lr_steps``, after an optional warmup
    that ramps the factor linearly from ``warmup_factor`` to 1 over ``warmup_iterations``."""

    def __init__(
        self,
        optimizer,
        lr_steps,
        lr_ratio=0.1,
        use_warmup=False,
        warmup_iterations=0,
        warmup_factor=0.2,
        last_epoch=-1,
    ):
        lr_steps = sorted(int(step) for step in lr_steps)
        warmup_iterations = int(warmup_iterations) if use_warmup else 0
        if lr_steps and warmup_iterations >= lr_steps[0]:
            raise ValueError(
                f"multi_step: warmup_iterations ({warmup_iterations}) must be smaller "
                f"than the first of lr_steps ({lr_steps[0]})"
            )

        def factor(step):
            if use_warmup and step <= warmup_iterations:
                alpha = float(step) / float(max(1, warmup_iterations))
                return warmup_factor * (1.0 - alpha) + alpha
            return lr_ratio ** bisect.bisect_right(lr_steps, step)

        super().__init__(optimizer, factor, last_epoch)
