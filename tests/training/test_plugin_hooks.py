"""Hooks that carry plugin state and modules through checkpoints, each used by a small test
plugin in a real (tiny) training run: ``toolkit_checkpoint_state`` /
``toolkit_load_checkpoint_state`` on resume and at inference, ``toolkit_on_epoch_end`` adding
the metric that picks the best checkpoint, and parameters added by ``toolkit_modify_model``."""

import pytest
import torch

from toolkit import hookimpl
from toolkit.config import compose_train_config
from toolkit.inference import load_for_inference
from toolkit.plugins import load_plugins
from toolkit.training.train import train
from toolkit.training.trainer import Trainer

TINY = ["task.toy_pairs=300", "task.vocab_size=200", "dataset.max_positions=64", "dataset.max_tokens=512",
        "common.log_format=none", "common.tensorboard_dir=null", "common.threads=1",
        "model.encoder_layers=1", "model.decoder_layers=1", "model.encoder_embed_dim=32",
        "model.decoder_embed_dim=32", "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64"]


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory):
    """One binarized toy corpus for every run of this module (each run prepares it if missing)."""
    return tmp_path_factory.mktemp("plugin-hooks-data") / "data-bin"


@pytest.fixture
def run(clean_config_store, data_bin):
    """``run(save_dir, *overrides, plugins=[(name, obj)])`` trains with those test plugins."""
    threads = torch.get_num_threads()  # common.threads sets it for the whole process

    def run(save_dir, *overrides, plugins=()):
        cfg = compose_train_config([*TINY, f"task.destdir={data_bin}", f"checkpoint.save_dir={save_dir}", *overrides])
        return train(cfg, load_plugins(autoload=False, extra=list(plugins)))

    yield run
    torch.set_num_threads(threads)


def checkpoint(path):
    return torch.load(path, weights_only=True)


# --- toolkit_checkpoint_state / toolkit_load_checkpoint_state ---------------------------------


class StepCounter:
    """Counts training steps in a tensor and keeps the count in checkpoints."""

    def __init__(self):
        self.steps = torch.zeros((), dtype=torch.long)
        self.loaded = []  # (state, trainer, trainer.num_updates then) per load

    @hookimpl(wrapper=True)
    def toolkit_train_step(self, validating):
        result = yield
        if not validating:
            self.steps += 1
        return result

    @hookimpl
    def toolkit_checkpoint_state(self, trainer):
        return {"step_counter": {"steps": self.steps.clone(), "num_updates": trainer.num_updates,
                                 "history": [1.5, "text"]}}

    @hookimpl
    def toolkit_load_checkpoint_state(self, state, trainer):
        self.loaded.append((state, trainer, None if trainer is None else trainer.num_updates))
        self.steps = state["step_counter"]["steps"].clone()


def test_plugin_state_round_trips_on_resume_and_at_inference(run, tmp_path):
    first = StepCounter()
    run(tmp_path, "optimization.max_update=3", plugins=[("step_counter", first)])
    assert first.loaded == []  # a fresh run has nothing to restore
    saved = checkpoint(tmp_path / "checkpoint_last.pt")["plugin_state"]
    assert saved == {"step_counter": {"steps": torch.tensor(3), "num_updates": 3, "history": [1.5, "text"]}}

    resumed = StepCounter()
    result = run(tmp_path, "optimization.max_update=5", plugins=[("step_counter", resumed)])
    assert result["num_updates"] == 5
    [(state, trainer, updates_then)] = resumed.loaded
    # exactly what was saved, given to the real trainer once the run's own state is restored
    assert isinstance(trainer, Trainer) and updates_then == 3
    assert state.keys() == {"step_counter"}
    assert torch.equal(state["step_counter"]["steps"], torch.tensor(3))
    assert state["step_counter"]["steps"].dtype == torch.long
    assert state["step_counter"]["num_updates"] == 3 and state["step_counter"]["history"] == [1.5, "text"]
    # the restored count went on: 3 restored + 2 steps of this run
    assert int(resumed.steps) == 5
    final = checkpoint(tmp_path / "checkpoint_last.pt")["plugin_state"]["step_counter"]
    assert torch.equal(final["steps"], torch.tensor(5)) and final["num_updates"] == 5

    inference = StepCounter()
    load_for_inference(tmp_path / "checkpoint_last.pt", load_plugins(autoload=False,
                                                                     extra=[("step_counter", inference)]), "cpu")
    [(state, trainer, _)] = inference.loaded
    assert trainer is None
    assert state.keys() == {"step_counter"} and torch.equal(state["step_counter"]["steps"], torch.tensor(5))
    assert state["step_counter"]["num_updates"] == 5 and state["step_counter"]["history"] == [1.5, "text"]


# --- toolkit_on_epoch_end ---------------------------------------------------------------------


class EpochScore:
    """Adds ``epoch_score`` to the validation metrics: 0.2, 0.9, 0.5 at epochs 1, 2, 3, so the
    lowest is at epoch 1 and the highest at epoch 2 (validation loss would pick neither)."""

    SCORES = {1: 0.2, 2: 0.9, 3: 0.5}

    def __init__(self):
        self.updates_at_epoch_end = {}

    @hookimpl
    def toolkit_on_epoch_end(self, trainer, epoch, valid_stats):
        assert "loss" in valid_stats  # called after validation
        valid_stats["epoch_score"] = self.SCORES[epoch]
        self.updates_at_epoch_end[epoch] = trainer.num_updates


@pytest.mark.parametrize("maximize, best_epoch", [(False, 1), (True, 2)])
def test_a_metric_added_at_epoch_end_selects_the_best_checkpoint(run, tmp_path, maximize, best_epoch):
    plugin = EpochScore()
    result = run(tmp_path, "dataset.max_tokens=2048", "optimization.max_epoch=3",
                 "checkpoint.best_metric=epoch_score", f"checkpoint.maximize_best_metric={maximize}",
                 plugins=[("epoch_score", plugin)])
    assert [stats["epoch_score"] for stats in result["valid"]] == [0.2, 0.9, 0.5]  # logged with the rest
    ends = plugin.updates_at_epoch_end
    assert sorted(ends) == [1, 2, 3] and ends[1] < ends[2] < ends[3]

    best = checkpoint(tmp_path / "checkpoint_best.pt")
    assert best["num_updates"] == ends[best_epoch]
    assert best["best_metric"] == EpochScore.SCORES[best_epoch]
    assert best["iterator"]["epoch"] == best_epoch + 1  # saved at the end of that epoch
    epoch_checkpoint = checkpoint(tmp_path / f"checkpoint{best_epoch}.pt")
    assert all(torch.equal(best["model"][k], epoch_checkpoint["model"][k]) for k in best["model"])
    last = checkpoint(tmp_path / "checkpoint_last.pt")
    assert last["num_updates"] == ends[3] and last["best_metric"] == EpochScore.SCORES[best_epoch]


# --- parameters added by toolkit_modify_model -------------------------------------------------


class ExtraHead:
    """Adds a small linear head to the model and trains it through a term of the loss."""

    def __init__(self):
        self.fresh = []  # the head's weights as initialised, per model built

    @hookimpl
    def toolkit_modify_model(self, model, cfg):
        model.extra_head = torch.nn.Linear(cfg.model.decoder_embed_dim, 3)
        self.fresh.append({k: v.detach().clone() for k, v in model.extra_head.state_dict().items()})

    @hookimpl(wrapper=True)
    def toolkit_train_step(self, trainer, validating):
        loss, sample_size, logging_output = yield
        if not validating:
            head = trainer.module.extra_head
            loss = loss + head(torch.ones(head.in_features, device=loss.device)).square().sum()
        return loss, sample_size, logging_output


def test_parameters_a_plugin_adds_are_saved_and_restored_for_inference(run, tmp_path):
    plugin = ExtraHead()
    result = run(tmp_path, "optimization.max_update=3", plugins=[("extra_head", plugin)])
    trained = {k: v.detach().clone() for k, v in result["model"].extra_head.state_dict().items()}
    assert not torch.equal(trained["weight"], plugin.fresh[0]["weight"])  # training changed it
    saved = checkpoint(tmp_path / "checkpoint_last.pt")["model"]
    assert torch.equal(saved["extra_head.weight"], trained["weight"])
    assert torch.equal(saved["extra_head.bias"], trained["bias"])

    loader = ExtraHead()
    _, _, model, _ = load_for_inference(tmp_path / "checkpoint_last.pt",
                                        load_plugins(autoload=False, extra=[("extra_head", loader)]), "cpu")
    assert len(loader.fresh) == 1 and not torch.equal(loader.fresh[0]["weight"], trained["weight"])
    assert torch.equal(model.extra_head.weight, trained["weight"])  # the trained values, not a new init
    assert torch.equal(model.extra_head.bias, trained["bias"])
