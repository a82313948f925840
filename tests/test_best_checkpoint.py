"""best.ckpt apart from early stopping, and ``checkpoint.final_weights`` (last or best)."""
import logging

import pytest
from toy_helpers import max_abs_diff, toy_config

from mmf.common.errors import ConfigError
from mmf.trainers.callbacks.base import Callback
from mmf.trainers.mmf_trainer import MMFTrainer
from mmf.utils.checkpoint import load_checkpoint_file, load_state_dict_file

# A large lr without schedule: the validation loss of the toy falls, rises and falls again,
# so the best update (3 of 8) is neither the first nor the last. No augmentation: the
# trajectory does not depend on how samples are seeded.
BOUNCING = (
    "run_type=train_val",
    "dataset_config.toy.processors.feature_processor.params.std=0.0",
    "training.max_updates=8",
    "training.evaluation_interval=1",
    "training.checkpoint_interval=1",
    "checkpoint.max_to_keep=-1",
    "optimizer.params.lr=0.2",
    "training.lr_scheduler=false",
)


class ValidationRecorder(Callback):
    """Records ``val/total_loss`` by update (keeps no state in checkpoints)."""

    state_key = None

    def __init__(self, state):
        super().__init__()
        self.state = state
        self.values = {}

    def on_validation_end(self, metrics):
        self.values[self.state.num_updates] = metrics["val/total_loss"]


def train_recording(save_dir, *opts):
    trainer = MMFTrainer(toy_config(save_dir, *BOUNCING, *opts)).load()
    recorder = ValidationRecorder(trainer.state)
    trainer.callbacks.append(recorder)
    trainer.train()
    return trainer, recorder.values


@pytest.mark.parametrize("early_stop", ["false", "true"])
def test_best_ckpt_holds_the_state_of_the_best_validation(tmp_path, early_stop):
    trainer, values = train_recording(
        tmp_path,
        f"training.early_stop.enabled={early_stop}",
        "training.early_stop.patience=100",
    )
    best_update = min(values, key=values.get)
    assert sorted(values) == list(range(1, 9)) and best_update not in (1, 8)
    assert trainer.state.best_update == best_update
    assert trainer.state.best_metric_value == values[best_update]
    best = load_checkpoint_file(tmp_path / "best.ckpt")
    assert best["trainer_state"]["num_updates"] == best["best_update"] == best_update
    history = load_state_dict_file(tmp_path / "models" / f"model_{best_update}.ckpt")
    assert max_abs_diff(best["model"], history) == 0.0
    last = load_state_dict_file(tmp_path / "current.ckpt")
    assert max_abs_diff(best["model"], last) > 0.0


def test_early_stopping_only_stops(tmp_path):
    trainer, values = train_recording(
        tmp_path, "training.early_stop.enabled=true", "training.early_stop.patience=2"
    )
    # Best at update 3; updates 4 and 5 do not improve, the validation of update 6 stops.
    assert trainer.state.num_updates == 6 and sorted(values) == list(range(1, 7))
    assert load_checkpoint_file(tmp_path / "best.ckpt")["best_update"] == 3


@pytest.mark.parametrize("final_weights", ["last", "best"])
def test_final_weights_choice(tmp_path, caplog, final_weights):
    with caplog.at_level(logging.INFO):
        trainer, _ = train_recording(tmp_path, f"checkpoint.final_weights={final_weights}")
    final = load_state_dict_file(tmp_path / "toy_mlp_final.pth")
    best = load_state_dict_file(tmp_path / "best.ckpt")
    last = load_state_dict_file(tmp_path / "current.ckpt")
    assert load_checkpoint_file(tmp_path / "current.ckpt")["num_updates"] == 8
    chosen, other = (last, best) if final_weights == "last" else (best, last)
    assert max_abs_diff(final, chosen) == 0.0 and max_abs_diff(final, other) > 0.0
    assert f"final weights (checkpoint.final_weights={final_weights})" in caplog.text
    expected = "update 3, from best.ckpt" if final_weights == "best" else "last update, 8"
    assert expected in caplog.text


def test_final_weights_best_without_validation_keeps_the_last(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        trainer = MMFTrainer(toy_config(tmp_path, "run_type=train", "training.max_updates=2"))
        trainer.load().train()
    assert not (tmp_path / "best.ckpt").exists()
    final = load_state_dict_file(tmp_path / "toy_mlp_final.pth")
    assert max_abs_diff(final, load_state_dict_file(tmp_path / "current.ckpt")) == 0.0
    assert "no best.ckpt was written; those of the last update, 2" in caplog.text


def test_wrong_final_weights_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^checkpoint.final_weights: expected one of") as info:
        MMFTrainer(toy_config(tmp_path, "checkpoint.final_weights=middle")).load()
    assert "\n" not in str(info.value) and "'middle'" in str(info.value)
