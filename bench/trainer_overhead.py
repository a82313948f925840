"""Trainer overhead: time per update through ``MMFTrainer`` vs a bare PyTorch loop.

Both train the same toy MLP (tests/fixtures/toy_project, widened so that an update costs a
few milliseconds) with the same optimizer and schedule on batches of the same dataset.
The trainer part runs ``MMFTrainer.training_loop`` with everything it does per update:
sampler, batch moves, loss checks, gradient accumulation bookkeeping, callbacks (lr
scheduler, checkpoint-interval check, logging every ``log_interval``, progress state).
The bare part is ``for batch in DataLoader: forward; backward; step; scheduler.step()``.

The two alternate in short rounds on one model (each trainer round extends
``max_updates`` and continues mid-epoch), so load from other jobs hits both alike; time is
this process's CPU time with one intra-op thread. Each trainer round also re-enters the
epoch (the sampler re-draws the epoch's permutation and skips what was consumed), which a
real run does once per epoch; longer rounds make that share smaller. Reported: total time
per update of each and the median of the per-round ratios. Target: ratio <= 1.05.

    python bench/trainer_overhead.py [--rounds 10] [--updates-per-round 40]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from mmf.trainers.mmf_trainer import MMFTrainer  # noqa: E402
from mmf.utils.configuration import Configuration  # noqa: E402
from mmf.utils.logger import setup_logger  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(REPO, "tests", "fixtures", "toy_project")
WIDTH = 384
BATCH_SIZE = 64


def make_config(save_dir, total_updates):
    return Configuration(
        [
            f"config={os.path.join(TOY, 'configs', 'train.yaml')}",
            "model=toy_mlp",
            "dataset=toy",
            f"env.user_dir={TOY}",
            f"env.save_dir={save_dir}",
            "run_type=train",
            f"training.max_updates={total_updates}",
            f"training.batch_size={BATCH_SIZE}",
            "training.log_interval=20",
            f"training.checkpoint_interval={10 * total_updates}",
            "training.tensorboard=false",
            "training.progress_bar=false",
            f"model_config.toy_mlp.in_dim={WIDTH}",
            f"model_config.toy_mlp.hidden_dim={4 * WIDTH}",
            f"dataset_config.toy.in_dim={WIDTH}",
            f"dataset_config.toy.num_samples.train={BATCH_SIZE * (total_updates + 1)}",
        ]
    ).get_config()


def bare_updates(trainer, batches, count):
    """``count`` plain updates on the trainer's model, optimizer and scheduler."""
    model, optimizer, scheduler = trainer.model, trainer.optimizer, trainer.scheduler
    model.train()
    start = time.process_time()
    for _ in range(count):
        batch = next(batches)
        loss = sum(value.mean() for value in model(batch)["losses"].values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    return time.process_time() - start


def trainer_updates(trainer, count):
    trainer.max_updates = trainer.state.num_updates + count
    start = time.process_time()
    trainer.training_loop()
    return time.process_time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--updates-per-round", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    count = args.updates_per_round
    with tempfile.TemporaryDirectory() as save_dir:
        setup_logger(None, 0, "warning")
        trainer = MMFTrainer(make_config(save_dir, (args.rounds + 1) * count)).load()
        dataset = trainer.train_loader.dataset.dataset  # inside SeededSamples
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=BATCH_SIZE, shuffle=True, collate_fn=dataset.collate_fn
        )
        batches = iter(loader)
        trainer._emit("on_train_start")
        bare_updates(trainer, batches, count)  # warm-up of both paths
        trainer_updates(trainer, count)
        bare, through_trainer = [], []
        for _ in range(args.rounds):
            bare.append(bare_updates(trainer, batches, count))
            through_trainer.append(trainer_updates(trainer, count))
        trainer._emit("teardown")
    bare_ms = 1000 * sum(bare) / (count * args.rounds)
    trainer_ms = 1000 * sum(through_trainer) / (count * args.rounds)
    ratio = statistics.median(t / b for t, b in zip(through_trainer, bare, strict=True))
    print(f"bare loop : {bare_ms:.3f} ms/update (CPU time, {args.rounds} x {count} updates)")
    print(f"trainer   : {trainer_ms:.3f} ms/update")
    print(f"overhead  : {1000 * (trainer_ms - bare_ms):.0f} us/update")
    print(f"ratio     : {ratio:.3f} (median of per-round ratios; target <= 1.05)")


if __name__ == "__main__":
    main()
