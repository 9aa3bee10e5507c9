"""Non-finite training is stopped, never saved: config values, losses, gradients, weights."""

import math

import pytest
import torch

from toolkit import hookimpl
from toolkit.checkpoint import non_finite_weights, save_checkpoint
from toolkit.config import ConfigError, compose_train_config, validate_train_config
from toolkit.errors import NonFiniteError
from toolkit.plugins import load_plugins
from toolkit.training.train import train
from toolkit.training.trainer import Trainer

from tests.training.tiny import checkpoint_names, tiny_config


@pytest.mark.parametrize("override, key", [
    ("optim.lr=inf", "optim.lr"), ("optim.lr=nan", "optim.lr"),
    ("optimization.clip_norm=nan", "optimization.clip_norm"), ("model.dropout=-inf", "model.dropout"),
    ("lr_scheduler.warmup_init_lr=inf", "lr_scheduler.warmup_init_lr"),
])
def test_non_finite_config_values_are_refused(override, key):
    with pytest.raises(ConfigError, match=rf"{key} must be a finite number"):
        validate_train_config(compose_train_config([override]))


def test_lr_inf_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="optim.lr must be a finite number, got inf"):
        train(compose_train_config(["optim.lr=inf", f"checkpoint.save_dir={tmp_path / 'run'}"]))
    assert not (tmp_path / "run").exists()


class _NanLossAt:
    """Makes the loss of update ``n`` NaN while its gradient stays finite (a NaN constant added)."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    @hookimpl(wrapper=True)
    def toolkit_train_step(self, validating):
        loss, size, logging_output = yield
        if not validating:
            self.calls += 1
            if self.calls == self.n:
                loss = loss + torch.tensor(math.nan)
        return loss, size, logging_output


def test_a_nan_loss_in_fp32_stops_the_run_naming_the_update_and_saves_nothing(tmp_path):
    session = load_plugins(autoload=False, extra=[("nan_loss", _NanLossAt(2))])
    with pytest.raises(NonFiniteError, match=r"training diverged at update 2: the loss is nan"):
        train(tiny_config(tmp_path, "checkpoint.save_interval_updates=2"), plugins=session)
    assert checkpoint_names(tmp_path) == []


def test_weights_that_overflow_after_a_finite_step_are_never_saved(tmp_path, monkeypatch):
    train_step = Trainer.train_step

    def overflowing_step(self, samples):  # as a huge learning rate would: finite loss and gradient, inf weights
        logging_output = train_step(self, samples)
        with torch.no_grad():
            next(self.module.parameters()).mul_(math.inf)
        return logging_output

    monkeypatch.setattr(Trainer, "train_step", overflowing_step)
    with pytest.raises(NonFiniteError, match=r"refusing to write .*checkpoint_last\.pt: training diverged at "
                                             r"update 1, weights hold NaN or infinite values"):
        train(tiny_config(tmp_path, "optimization.max_update=1"))
    assert checkpoint_names(tmp_path) == []


def test_save_checkpoint_refuses_non_finite_weights(tmp_path):
    weights = {"a": torch.ones(3), "b": torch.tensor([1.0, math.inf]), "steps": torch.tensor([3])}
    assert non_finite_weights(weights) == ["b"]
    with pytest.raises(NonFiniteError, match=r"refusing to write .*x\.pt.*\(b\)"):
        save_checkpoint({"cfg": {}, "model": weights}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []
