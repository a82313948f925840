"""MMFTrainer on the toy project: accumulation, precision, clipping, NaN, skipping, early
stopping, schedules and optimizer building."""
import logging
import math

import pytest
import torch
from toy_helpers import TRAIN_YAML, max_abs_diff, toy_config, toy_opts, train_toy, weights

from mmf.common.errors import ConfigError, DataError, UnknownNameError
from mmf.modules.schedulers import MultiStepScheduler, WarmupCosineScheduler, WarmupLinearScheduler
from mmf.trainers.mmf_trainer import MMFTrainer, NonFiniteLossError
from mmf.utils.build import build_optimizer
from mmf.utils.configuration import Configuration
from mmf.utils.general import get_batch_size

# No randomness besides the shuffled order, so runs with different batching can match.
DETERMINISTIC = (
    "run_type=train",
    "model_config.toy_mlp.dropout=0.0",
    "dataset_config.toy.processors.feature_processor.params.std=0.0",
)


def test_update_frequency_matches_a_larger_batch(tmp_path):
    big = train_toy(
        tmp_path / "big", *DETERMINISTIC, "training.batch_size=16", "training.max_updates=3"
    )
    accumulated = train_toy(
        tmp_path / "acc",
        *DETERMINISTIC,
        "training.batch_size=8",
        "training.update_frequency=2",
        "training.max_updates=3",
    )
    assert accumulated.state.current_iteration == 6 and big.state.current_iteration == 3
    assert max_abs_diff(weights(big.model), weights(accumulated.model)) < 1e-6


def test_bf16_autocast_on_cpu_and_fp16_falls_back(tmp_path, caplog):
    bf16 = train_toy(
        tmp_path / "bf16", "run_type=train", "training.bf16=true", "training.max_updates=2"
    )
    assert bf16.autocast_dtype == torch.bfloat16 and bf16.state.num_updates == 2
    with caplog.at_level(logging.WARNING):
        fp16 = train_toy(
            tmp_path / "fp16", "run_type=train", "training.fp16=true", "training.max_updates=1"
        )
    assert fp16.autocast_dtype is None and not fp16.scaler.is_enabled()
    assert "fp16 needs CUDA" in caplog.text


def test_gradient_clipping_bounds_the_step(tmp_path):
    opts = (
        *DETERMINISTIC,
        "optimizer.type=SGD",
        "optimizer.params={'lr': 1.0}",
        "training.lr_scheduler=false",
    )
    before = weights(
        MMFTrainer(toy_config(tmp_path / "a", *opts, "training.max_updates=0")).load().model
    )
    clipped = train_toy(
        tmp_path / "b",
        *opts,
        "training.max_updates=1",
        "training.clip_gradients=true",
        "training.max_grad_l2_norm=0.001",
    )
    step = torch.cat([(weights(clipped.model)[k] - before[k]).flatten() for k in before])
    assert 0 < step.norm().item() <= 0.001 + 1e-6
    with pytest.raises(ConfigError, match="max_grad_l2_norm is null"):
        MMFTrainer(
            toy_config(
                tmp_path / "c", "training.clip_gradients=true", "training.max_grad_l2_norm=null"
            )
        ).load()


def test_nan_loss_stops_naming_loss_and_update(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"update 3 .*'ce_loss'"):
        train_toy(
            tmp_path, *DETERMINISTIC, "training.shuffle=false", "dataset_config.toy.nan_index=20"
        )


def test_skipped_samples_are_counted_per_epoch(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        trainer = train_toy(
            tmp_path,
            "run_type=train",
            "training.max_updates=100",
            "training.max_epochs=1",
            "dataset_config.toy.skip_every=5",
        )
    # Items 0, 5, ..., 60 of 64 are unreadable; 8 batches = 8 updates, each smaller.
    assert trainer.state.num_updates == 8 and trainer.state.current_epoch == 1
    assert "epoch 0 done: 13 samples were skipped" in caplog.text


def test_epoch_of_only_empty_batches_raises(tmp_path):
    with pytest.raises(DataError, match="every sample of epoch 0"):
        train_toy(tmp_path, "run_type=train", "dataset_config.toy.skip_every=1")


def test_early_stopping_stops_after_patience(tmp_path):
    trainer = train_toy(
        tmp_path,
        "run_type=train_val",
        "optimizer.params.lr=0.0",
        "training.max_updates=50",
        "training.evaluation_interval=1",
        "training.early_stop.enabled=true",
        "training.early_stop.patience=2",
    )
    # lr 0: the val loss never improves after update 1, so the run stops at 1 + 2 + 1.
    assert trainer.state.num_updates == 4 and trainer.state.best_update == 1
    assert (tmp_path / "best.ckpt").exists()


def test_early_stopping_on_metric_with_mmf_style_name(tmp_path):
    trainer = train_toy(
        tmp_path,
        "run_type=train_val",
        "training.max_updates=4",
        "training.evaluation_interval=2",
        "training.early_stop.criteria=toy/toy_accuracy/accuracy",
        "training.early_stop.minimize=false",
        "training.early_stop.enabled=true",
    )
    assert trainer.state.best_metric_value is not None
    with pytest.raises(ConfigError, match="early_stop.criteria 'toy/recall'"):
        train_toy(
            tmp_path / "bad",
            "run_type=train_val",
            "training.max_updates=1",
            "training.early_stop.criteria=toy/recall",
            "training.early_stop.enabled=true",
        )


def test_metric_field_that_no_batch_holds_raises(tmp_path):
    with pytest.raises(ConfigError, match=r"ToyAccuracy needs \['video_id'\], which neither"):
        train_toy(
            tmp_path,
            "run_type=val",
            "evaluation.metrics[0].params.extra_fields=['video_id']",
        )


def test_user_callback_and_max_epochs(tmp_path):
    experiment = tmp_path / "callbacks.yaml"
    experiment.write_text(
        f"includes:\n- {TRAIN_YAML}\n"
        "training:\n  callbacks:\n  - type: toy_recorder\n    params:\n      file: seen.txt\n"
    )
    opts = toy_opts(
        tmp_path,
        "run_type=train",
        "training.max_updates=100",
        "training.max_epochs=2",
        "training.update_frequency=3",
    )
    opts[0] = f"config={experiment}"
    trainer = MMFTrainer(Configuration(opts).get_config()).load()
    # 8 batches per epoch, 3 per update: ceil(8 / 3) * 2 epochs caps the update count,
    # but the partial accumulation at each epoch end carries over: 16 batches = 5 updates.
    assert trainer.max_updates == 6
    trainer.train()
    assert trainer.state.current_epoch == 2 and trainer.state.num_updates == 5
    assert (tmp_path / "seen.txt").read_text() == "1 2 3 4 5"


def hf_cosine(step, warmup, total, cycles=0.5):
    """transformers.get_cosine_schedule_with_warmup's lr_lambda, written out."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    progress = float(step - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(cycles) * 2.0 * progress)))


def _lrs(scheduler, steps):
    values = []
    for _ in range(steps):
        values.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return values


def test_warmup_cosine_equals_hf_formula():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = WarmupCosineScheduler(optimizer, num_warmup_steps=5, num_training_steps=30)
    assert _lrs(scheduler, 35) == pytest.approx(
        [0.5 * hf_cosine(s, 5, 30) for s in range(35)], abs=1e-12
    )
    restored = WarmupCosineScheduler(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5), 5, 30
    )
    restored.load_state_dict(scheduler.state_dict())
    assert restored.get_last_lr() == scheduler.get_last_lr()


def test_warmup_linear_and_multi_step():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert _lrs(WarmupLinearScheduler(optimizer, 2, 6), 7) == pytest.approx(
        [0, 0.5, 1, 0.75, 0.5, 0.25, 0]
    )
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    multi = MultiStepScheduler(
        optimizer,
        lr_steps=[4, 6],
        lr_ratio=0.1,
        use_warmup=True,
        warmup_iterations=2,
        warmup_factor=0.5,
    )
    assert _lrs(multi, 8) == pytest.approx([0.5, 0.75, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_optimizer_building(tmp_path):
    config = toy_config(tmp_path, "optimizer.params.betas=[0.8, 0.9]")
    model = torch.nn.Linear(2, 2)
    model.get_optimizer_parameters = lambda cfg: [{"params": [model.weight]}]
    with pytest.raises(
        ConfigError, match="1 trainable parameters are in no optimizer group \\(bias\\)"
    ):
        build_optimizer(model, config)
    model.get_optimizer_parameters = lambda cfg: [{"params": list(model.parameters())}]
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.8, 0.9)
    with pytest.raises(UnknownNameError, match="optimizer.type: unknown optimizer 'adamw_typo'"):
        build_optimizer(model, toy_config(tmp_path, "optimizer.type=adamw_typo"))


def test_batch_size_must_split_over_ranks(tmp_path):
    config = toy_config(tmp_path, "training.batch_size=6")
    assert get_batch_size(config.training, 3) == 2
    with pytest.raises(ConfigError, match="training.batch_size=6 must be a positive multiple"):
        get_batch_size(config.training, 4)


def test_train_metrics_are_logged_and_written_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mmf.utils.logger import close_handlers
    from mmf_cli.run import main

    try:
        main(toy_opts(tmp_path, "run_type=train", "training.tensorboard=true"))
    finally:
        close_handlers()
    progress = [
        line for line in (tmp_path / "train.log").read_text().splitlines() if "progress: " in line
    ]
    # log_interval 2 of 6 updates; the toy model's train_metrics hold toy/batch_accuracy.
    assert [line.split("progress: ")[1].split(",")[0] for line in progress] == ["2/6", "4/6", "6/6"]
    assert all("toy/batch_accuracy: " in line for line in progress)
    events = EventAccumulator(str(tmp_path / "logs" / "tensorboard")).Reload()
    accuracy = events.Scalars("train/toy/batch_accuracy")
    assert [event.step for event in accuracy] == [2, 4, 6]
    assert all(0.0 <= event.value <= 1.0 for event in accuracy)
