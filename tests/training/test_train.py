"""End-to-end training on the generated toy corpus: learning, resuming, checkpoints, precision."""

import os
import shutil
import signal

import pytest
import torch

from toolkit import hookimpl
from toolkit.config import ConfigError, compose_train_config
from toolkit.plugins import load_plugins
from toolkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from toolkit.training.train import train

TINY = [
    "task.toy_pairs=1000", "task.vocab_size=300", "task.splits=[train,valid]",
    "model.encoder_layers=1", "model.decoder_layers=1", "model.encoder_embed_dim=64",
    "model.decoder_embed_dim=64", "model.encoder_ffn_dim=128", "model.decoder_ffn_dim=128",
    "dataset.max_tokens=1024", "dataset.max_positions=64", "common.log_format=none",
    "lr_scheduler.warmup_updates=20", "common.tensorboard_dir=null",
]


def config(save_dir, *overrides):
    return compose_train_config([*TINY, f"checkpoint.save_dir={save_dir}", *overrides])


def test_a_tiny_model_learns_the_toy_corpus(toy_training):
    # the suite's shared toy run (conftest.py at the root): the demo's tiny Transformer, 3 epochs
    save_dir, result = toy_training
    valid_nll = [stats["nll_loss"] for stats in result["valid"]]
    # a uniform guess over the ~1000 pieces costs ln(1000) = 6.9 nats; every epoch improves, ending < 2.5
    assert len(valid_nll) == 3 and all(b < a for a, b in zip(valid_nll, valid_nll[1:])), valid_nll
    assert valid_nll[-1] < 2.5, valid_nll
    assert result["train_losses"][-1] < result["train_losses"][0] / 2
    events = list((save_dir / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(save_dir / "tb")).Reload().Tags()["scalars"]
    for tag in ("train/loss", "train/nll_loss", "train/ppl", "train/lr", "train/grad_norm",
                "train/tgt_tokens_per_s", "valid/loss"):
        assert tag in scalars


def copy_checkpoints(run, save_dir):
    """A copy of a shared run's checkpoints, to go on from (the shared run stays as it is)."""
    save_dir.mkdir(parents=True)
    for path in run.save_dir.glob("checkpoint*.pt"):
        shutil.copy2(path, save_dir / path.name)
    return save_dir


def test_resumed_run_continues_the_same_curve_bitwise(tmp_path, tiny_one_epoch, tiny_three_epochs, tiny_data):
    straight = tiny_three_epochs.result  # 3 epochs in one go
    first = tiny_one_epoch.result  # 1 epoch, then resumed (from a copy of its folder) up to epoch 3
    second = train(config(copy_checkpoints(tiny_one_epoch, tmp_path / "b"), tiny_data, "optimization.max_epoch=3"))
    assert second["num_updates"] == straight["num_updates"] > first["num_updates"] > 0
    assert first["train_losses"] + second["train_losses"] == straight["train_losses"]
    a = load_checkpoint(tiny_three_epochs.save_dir / "checkpoint_last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


class _SignalAfter:
    """Sends a real SIGINT to this process after ``n`` training steps."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    @hookimpl(wrapper=True)
    def toolkit_train_step(self):
        result = yield
        self.calls += 1
        if self.calls == self.n:
            os.kill(os.getpid(), signal.SIGINT)
        return result


def test_sigint_saves_mid_epoch_and_the_rerun_resumes_exactly(tmp_path, tiny_one_epoch, tiny_data):
    straight = tiny_one_epoch.result
    stopper = load_plugins(autoload=False, extra=[("stopper", _SignalAfter(5))])
    interrupted = train(config(tmp_path / "b", tiny_data, "optimization.max_epoch=1"), plugins=stopper)
    assert interrupted["interrupted"] and interrupted["num_updates"] == 5
    state = load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")
    assert state["iterator"] == {"epoch": 1, "iterations_in_epoch": 5}
    resumed = train(config(tmp_path / "b", tiny_data, "optimization.max_epoch=1"))
    assert interrupted["train_losses"] + resumed["train_losses"] == straight["train_losses"]


def test_checkpoint_contents_load_with_weights_only(tiny_three_updates):
    run = tiny_three_updates.save_dir  # train(config(run, "optimization.max_update=3"))
    state = torch.load(run / "checkpoint_last.pt", weights_only=True)
    for key in ("model", "optimizer", "lr_scheduler", "scaler", "rng", "iterator", "cfg", "task", "plugins"):
        assert key in state
    assert state["num_updates"] == 3 and state["cfg"]["model"]["encoder_layers"] == 1
    assert state["task"]["src_tokenizer"]["kind"] == "sentencepiece"
    assert (run / "config.yaml").exists()


def test_epoch_checkpoints_are_pruned_and_best_is_kept(tiny_three_epochs):
    # trained with optimization.max_epoch=3 checkpoint.keep_last_epochs=2
    names = sorted(p.name for p in tiny_three_epochs.save_dir.glob("checkpoint*.pt"))
    assert names == ["checkpoint2.pt", "checkpoint3.pt", "checkpoint_best.pt", "checkpoint_last.pt"]


def test_truncated_checkpoint_fails_clearly_and_is_not_overwritten(tmp_path, tiny_three_updates, tiny_data):
    last = copy_checkpoints(tiny_three_updates, tmp_path / "run") / "checkpoint_last.pt"  # 3 updates
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        train(config(tmp_path / "run", tiny_data, "optimization.max_update=4"))
    assert last.stat().st_size == 1000  # nothing was written over it


def test_interrupted_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_last.pt"
    save_checkpoint({"cfg": {}, "model": {"w": torch.ones(3)}}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"cfg": {}, "model": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pt"]  # no temp file left


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_untrusted_checkpoint_does_not_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"cfg": {}, "model": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="holds objects other than tensors"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_missing_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", "optim.lr must be positive"),
    ("dataset.max_tokens=32", "smaller than the longest allowed pair"),
])
def test_invalid_values_fail_before_any_work(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(config(tmp_path, override))
    assert not (tmp_path / "data-bin").exists()


def test_update_freq_accumulates_batches(tmp_path, tiny_one_epoch, tiny_data):
    one = tiny_one_epoch.result
    two = train(config(tmp_path / "b", tiny_data, "optimization.max_epoch=1", "optimization.update_freq=2"))
    assert two["num_updates"] == (one["num_updates"] + 1) // 2


def test_bf16_autocast_trains(tiny_bf16):
    result = tiny_bf16.result  # common.precision=bf16 optimization.max_update=40
    assert result["num_updates"] == 40
    assert result["train_losses"][-1] < result["train_losses"][0]


def test_fp16_overflow_steps_are_skipped_and_counted(tmp_path, tiny_data):
    from toolkit.training.trainer import Trainer

    cfg = config(tmp_path, tiny_data, "common.precision=fp16")
    plugins = load_plugins(autoload=False)
    task = plugins.registries.task.build(cfg.task, cfg)
    task.prepare()
    model = task.build_model(plugins.registries, cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(plugins.registries, cfg.criterion), plugins)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**30)  # overflows fp16 at first
    batches = list(task.batch_iterator(task.load_dataset("train", 64), train=True).next_epoch_itr())
    results = [trainer.train_step([batches[i % len(batches)]]) for i in range(40)]
    assert results[0] is None and trainer.skipped_updates > 0
    assert trainer.num_updates == sum(r is not None for r in results) > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_finetuning_starts_from_the_weights_with_a_fresh_optimizer_and_epoch(tmp_path, tiny_three_epochs, tiny_data):
    parent = tiny_three_epochs.result
    finetune = [f"checkpoint.finetune_from={tiny_three_epochs.save_dir / 'checkpoint_last.pt'}", tiny_data]
    child = train(config(tmp_path / "b", *finetune, "optimization.max_update=2"))
    # the first batch is the parent's first batch, now scored by the trained weights
    first, last = parent["train_losses"][0], parent["train_losses"][-1]
    assert abs(child["train_losses"][0] - last) < abs(child["train_losses"][0] - first) / 3, (first, last, child)
    state = load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")
    assert state["num_updates"] == 2 and state["iterator"]["epoch"] == 1
    assert all(int(s["step"]) == 2 for s in state["optimizer"]["state"].values())
    # a rerun resumes the child's own run instead of starting from the parent again
    resumed = train(config(tmp_path / "b", *finetune, "optimization.max_update=4"))
    assert resumed["num_updates"] == 4 and len(resumed["train_losses"]) == 2


def _fresh_model(tmp_path, *overrides):
    from toolkit.plugins import load_plugins

    cfg = config(tmp_path, *overrides)
    plugins = load_plugins(autoload=False)
    task = plugins.registries.task.build(cfg.task, cfg)
    task.prepare()
    return task.build_model(plugins.registries, cfg.model), task, plugins


def test_finetuning_loads_every_weight_and_refuses_what_does_not_fit(tmp_path, tiny_three_updates, tiny_data):
    from toolkit.checkpoint import initialize_from

    parent = tiny_three_updates.save_dir / "checkpoint_last.pt"
    weights, same_data = load_checkpoint(parent)["model"], tiny_data
    model, task, plugins = _fresh_model(tmp_path / "b", same_data)
    initialize_from(parent, model, task, plugins)
    assert model.state_dict().keys() == weights.keys()
    assert all(torch.equal(value, weights[key]) for key, value in model.state_dict().items())

    deeper, task, plugins = _fresh_model(tmp_path / "c", same_data, "model.decoder_layers=2")
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: \['decoder\.layers\.1\."):
        initialize_from(parent, deeper, task, plugins)
    initialize_from(parent, deeper, task, plugins, strict=False)  # the shared block is loaded
    assert torch.equal(deeper.state_dict()["decoder.layers.0.ffn.fc1.weight"], weights["decoder.layers.0.ffn.fc1.weight"])

    other_vocab, task, plugins = _fresh_model(tmp_path / "d", "task.vocab_size=250")
    with pytest.raises(CheckpointError, match="vocabularies or tokenizers differ"):
        initialize_from(parent, other_vocab, task, plugins)
    with pytest.raises(CheckpointError, match="does not exist"):
        train(config(tmp_path / "e", "checkpoint.finetune_from=" + str(tmp_path / "nope.pt")))


def test_finetuning_on_new_data_takes_the_parents_tokenizers(tmp_path, tiny_three_updates):
    from toolkit.data.toy_corpus import write_toy_corpus

    parent = tiny_three_updates.save_dir / "checkpoint_last.pt"
    new_data = write_toy_corpus(tmp_path / "new", n_train=400, n_valid=30, n_test=30, seed=5)
    with pytest.raises(CheckpointError, match="vocabularies or tokenizers differ"):  # its own, new vocabulary
        train(config(tmp_path / "b", f"task.data={new_data}", f"checkpoint.finetune_from={parent}"))
    child = train(config(tmp_path / "c", f"task.data={new_data}", f"task.tokenizers_from={parent}",
                         f"checkpoint.finetune_from={parent}", "optimization.max_update=2"))
    assert child["num_updates"] == 2
    from toolkit.data.tokenizer import tokenizer_from_state_dict

    for side in ("src_tokenizer", "tgt_tokenizer"):  # the parent's sentencepiece models, byte for byte
        child_tok, parent_tok = (tokenizer_from_state_dict(load_checkpoint(path)["task"][side])
                                 for path in (tmp_path / "c" / "checkpoint_last.pt", parent))
        assert child_tok.model_proto == parent_tok.model_proto
