"""Learning-rate schedules (toolkit.optim.lr_scheduler): values at chosen updates, computed by
hand, for schedules built as ``toolkit-train`` builds them (composed config, registry, Adam).

``step_update(n)`` sets the lr for the update after the n-th, so update ``n + 1`` runs at
``lr_at(n)``; update 1 runs at the value set when the schedule is built (``n = 0``).
"""

import pytest
import torch

from toolkit import hookimpl
from toolkit.config import compose_train_config
from toolkit.plugins import load_plugins
from toolkit.training.train import train


def build(*overrides, groups=2):
    """Optimizer and schedule from ``toolkit-train``'s config with ``overrides``."""
    cfg = compose_train_config(["common.log_format=none", *overrides])
    registries = load_plugins(autoload=False).registries
    params = [{"params": [torch.nn.Parameter(torch.zeros(3))]} for _ in range(groups)]
    optimizer = registries.optimizer.build(cfg.optim, params)
    return optimizer, registries.lr_scheduler.build(cfg.lr_scheduler, optimizer)


def assert_schedule(optimizer, schedule, expected):
    for num_updates, lr in expected.items():
        assert schedule.step_update(num_updates) == pytest.approx(lr, rel=1e-12, abs=1e-15), num_updates
        assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(lr, rel=1e-12, abs=1e-15)] * len(
            optimizer.param_groups), num_updates


INVERSE_SQRT = ["lr_scheduler=inverse_sqrt", "optim.lr=0.002", "lr_scheduler.warmup_updates=4",
                "lr_scheduler.warmup_init_lr=0.0001"]
# a linear ramp 1e-4 -> 2e-3 over 4 updates (steps of 4.75e-4), the peak at update 4, then
# 2e-3 * sqrt(4 / n)
INVERSE_SQRT_VALUES = {0: 1e-4, 1: 5.75e-4, 2: 1.05e-3, 3: 1.525e-3, 4: 2e-3, 16: 1e-3, 25: 8e-4, 64: 5e-4,
                       100: 4e-4, 400: 2e-4}


def test_inverse_sqrt_ramps_from_warmup_init_lr_to_optim_lr_then_decays(clean_config_store):
    optimizer, schedule = build(*INVERSE_SQRT)
    # built at update 0: the first update runs at warmup_init_lr
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(1e-4)] * 2
    assert_schedule(optimizer, schedule, INVERSE_SQRT_VALUES)


def test_inverse_sqrt_defaults_ramp_from_zero(clean_config_store):
    optimizer, schedule = build("lr_scheduler=inverse_sqrt", "optim.lr=0.001", "lr_scheduler.warmup_updates=10")
    assert_schedule(optimizer, schedule, {0: 0.0, 1: 1e-4, 5: 5e-4, 10: 1e-3, 40: 5e-4, 1000: 1e-4})


def test_fixed_is_the_optimizer_lr_after_an_optional_ramp_from_zero(clean_config_store):
    optimizer, schedule = build("lr_scheduler=fixed", "optim.lr=0.001", "lr_scheduler.warmup_updates=0")
    assert_schedule(optimizer, schedule, {0: 1e-3, 1: 1e-3, 7: 1e-3, 100000: 1e-3})
    optimizer, schedule = build("lr_scheduler=fixed", "optim.lr=0.001", "lr_scheduler.warmup_updates=4")
    assert_schedule(optimizer, schedule, {0: 0.0, 1: 2.5e-4, 2: 5e-4, 3: 7.5e-4, 4: 1e-3, 5: 1e-3, 1000: 1e-3})


def test_cosine_ramps_then_follows_half_a_cosine_down_to_min_lr(clean_config_store):
    optimizer, schedule = build("lr_scheduler=cosine", "optim.lr=0.001", "lr_scheduler.warmup_updates=2",
                                "lr_scheduler.max_update=8", "lr_scheduler.min_lr=0.0001")
    # after warm-up, progress p = (n - 2) / 6 and lr = 1e-4 + 9e-4 * (1 + cos(pi p)) / 2:
    # p = 1/3: cos = 1/2 -> 1e-4 + 9e-4 * 0.75; p = 1/2: cos = 0; p = 2/3: cos = -1/2; p = 1: min_lr
    assert_schedule(optimizer, schedule, {0: 0.0, 1: 5e-4, 2: 1e-3, 4: 7.75e-4, 5: 5.5e-4, 6: 3.25e-4, 8: 1e-4,
                                          9: 1e-4, 1000: 1e-4})


def test_schedule_state_restores_the_peak_on_resume(clean_config_store):
    optimizer, schedule = build(*INVERSE_SQRT)
    schedule.step_update(16)
    state = schedule.state_dict()
    assert state == {"peak_lr": pytest.approx(2e-3)}
    # the trainer's resume order: optimizer and schedule built fresh, then both loaded
    resumed_optimizer, resumed = build(*INVERSE_SQRT)
    resumed_optimizer.load_state_dict(optimizer.state_dict())  # its groups now hold the decayed lr
    resumed.load_state_dict(state)
    assert_schedule(resumed_optimizer, resumed, {n: lr for n, lr in INVERSE_SQRT_VALUES.items() if n >= 16})
    # the peak is state: a schedule that took it from the restored optimizer's (decayed) lr is off
    stale = type(schedule)(schedule.cfg, resumed_optimizer)
    assert stale.lr_at(64) != pytest.approx(5e-4)


class _LrRecorder:
    """Records the lr each training update runs at, by update count before the update."""

    def __init__(self):
        self.lr = {}

    @hookimpl(wrapper=True)
    def toolkit_train_step(self, trainer, validating):
        if not validating:
            self.lr[trainer.num_updates] = [g["lr"] for g in trainer.optimizer.param_groups]
        return (yield)


@pytest.fixture
def keep_threads():
    """``common.threads`` sets torch's thread count for the process: restore it afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_training_runs_each_update_at_the_scheduled_lr_across_a_resume(clean_config_store, keep_threads, tmp_path):
    overrides = [*INVERSE_SQRT, "task.toy_pairs=300", "task.vocab_size=200", "dataset.max_positions=64",
                 "dataset.max_tokens=512", "common.tensorboard_dir=null", "model.encoder_layers=1",
                 "model.decoder_layers=1", "model.encoder_embed_dim=32", "model.decoder_embed_dim=32",
                 "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64", "common.threads=1",
                 f"checkpoint.save_dir={tmp_path}"]
    first, resumed = _LrRecorder(), _LrRecorder()
    train(compose_train_config([*overrides, "optimization.max_update=5"]),
          load_plugins(autoload=False, extra=[("lr_recorder", first)]))
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert state["num_updates"] == 5 and state["lr_scheduler"] == {"peak_lr": pytest.approx(2e-3)}
    train(compose_train_config([*overrides, "optimization.max_update=17"]),
          load_plugins(autoload=False, extra=[("lr_recorder", resumed)]))
    assert sorted(first.lr) == [0, 1, 2, 3, 4] and sorted(resumed.lr) == list(range(5, 17))
    expected = {n: 2e-3 * (4 / n) ** 0.5 for n in range(4, 17)} | {n: 1e-4 + 4.75e-4 * n for n in range(4)}
    for n, lrs in (first.lr | resumed.lr).items():
        assert lrs == [pytest.approx(expected[n], rel=1e-12)], n
