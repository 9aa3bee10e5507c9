"""Real two-process data parallelism (gloo, spawned processes) against one process."""

import os

import pytest
import torch
import torch.multiprocessing as mp

from toolkit import hookimpl
from toolkit.config import compose_train_config
from toolkit.plugins import load_plugins
from toolkit.checkpoint import CheckpointError, load_checkpoint
from toolkit.training.sharding import is_sharded
from toolkit.testing import free_port
from toolkit.training.train import train

SMALL = [
    "task.toy_pairs=600", "task.vocab_size=200", "task.splits=[train,valid]", "model.encoder_layers=1",
    "model.decoder_layers=1", "model.encoder_embed_dim=32", "model.decoder_embed_dim=32",
    "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64", "dataset.max_tokens=256",
    "dataset.max_positions=64", "common.log_format=none", "lr_scheduler.warmup_updates=5",
]



class SkipLastDecoderBlockOnOddUpdates:
    """A LayerDrop-like plugin: the last decoder block is skipped at odd updates (on every rank,
    through the decoder's ``skip_blocks``), so those steps leave its parameters without gradient."""

    odd_update = False

    @hookimpl
    def toolkit_modify_model(self, model):
        model.find_unused_parameters = True
        last = len(model.decoder.layers) - 1
        model.decoder.skip_blocks = lambda: {last} if self.odd_update else set()

    @hookimpl(wrapper=True)
    def toolkit_train_step(self, model, trainer):
        self.odd_update = trainer.num_updates % 2 == 1
        return (yield)


def _plugins(skipping: bool):
    return load_plugins(autoload=False, extra=[("skip", SkipLastDecoderBlockOnOddUpdates())] if skipping else [])


def _worker(rank: int, world: int, port: int, overrides: list[str], out: str, skipping: bool = False) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    history = train(compose_train_config([*SMALL, *overrides]), _plugins(skipping))
    model = history["model"]  # a sharded model's full weights are in its checkpoint only
    torch.save({"losses": history["train_losses"], "model": None if is_sharded(model) else model.state_dict(),
                "num_updates": history["num_updates"]}, f"{out}.rank{rank}")


def run_two_processes(tmp_path, name, *overrides, skipping=False):
    out = str(tmp_path / name)
    mp.start_processes(_worker, args=(2, free_port(), list(overrides), out, skipping), nprocs=2,
                       start_method="spawn")
    return [torch.load(f"{out}.rank{r}", weights_only=True) for r in range(2)]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """``task.destdir=...`` of SMALL's binarized toy corpus, prepared once for every run here
    (an up-to-date folder is only read, by one process or two)."""
    save_dir = tmp_path_factory.mktemp("small-data")
    cfg = compose_train_config([*SMALL, f"checkpoint.save_dir={save_dir}"])
    plugins = load_plugins(autoload=False)
    plugins.registries.task.build(cfg.task, cfg).prepare()
    return f"task.destdir={save_dir / 'data-bin'}"


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, small_data):
    """Two processes (DDP), no dropout, 6 updates; checkpoints and tensorboard in ``save_dir``.
    Shared by the tests that compare one process and FSDP with it."""
    root = tmp_path_factory.mktemp("ddp")
    save_dir = root / "run"
    ranks = run_two_processes(root, "ddp", small_data, "model.dropout=0.0", "optimization.max_update=6",
                              "common.threads=1", f"checkpoint.save_dir={save_dir}",
                              f"common.tensorboard_dir={save_dir / 'tb'}")
    return save_dir, ranks


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, ddp_run, small_data):
    common = ["model.dropout=0.0", "optimization.max_update=6", "common.threads=1", small_data]
    save_dir, ranks = ddp_run  # the same run with 2 processes
    single = train(compose_train_config([*SMALL, *common, "optimization.update_freq=2",
                                         f"checkpoint.save_dir={tmp_path / 'one'}"]))
    # parameters stay identical on both ranks, and equal one process's with update_freq=2
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), key
        torch.testing.assert_close(value, single["model"].state_dict()[key], rtol=1e-4, atol=1e-5)
    assert ranks[0]["losses"] == ranks[1]["losses"]  # logged losses are summed over ranks
    torch.testing.assert_close(torch.tensor(ranks[0]["losses"]), torch.tensor(single["train_losses"]),
                               rtol=1e-5, atol=1e-6)
    # only rank 0 writes: one tensorboard event file, one set of checkpoints
    assert len(list((save_dir / "tb").glob("events.out.tfevents.*"))) == 1
    assert load_checkpoint(save_dir / "checkpoint_last.pt")["num_updates"] == 6
    assert not list(save_dir.glob(".*.tmp*"))


def test_steps_that_leave_parameters_unused_train_like_one_process(tmp_path, small_data):
    """LayerDrop's problem under data parallelism: a model that sets ``find_unused_parameters``
    may skip blocks (the same ones on every rank); gradients still synchronise, and DDP and
    FSDP both match one process with the same global batch."""
    common = ["model.dropout=0.0", "model.decoder_layers=2", "optimization.max_update=6", "common.threads=1",
              "common.tensorboard_dir=null", small_data]
    ranks = run_two_processes(tmp_path, "skip", *common, f"checkpoint.save_dir={tmp_path / 'ddp'}", skipping=True)
    single = train(compose_train_config([*SMALL, *common, "optimization.update_freq=2",
                                         f"checkpoint.save_dir={tmp_path / 'one'}"]), _plugins(skipping=True))
    assert ranks[0]["num_updates"] == single["num_updates"] == 6
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), key
        torch.testing.assert_close(value, single["model"].state_dict()[key], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(ranks[0]["losses"]), torch.tensor(single["train_losses"]),
                               rtol=1e-5, atol=1e-6)
    # sharded: a skipped block's unit is neither gathered nor reduced, on every rank alike
    sharded = run_two_processes(tmp_path, "skip_fsdp", *common, "common.distributed_strategy=fsdp",
                                f"checkpoint.save_dir={tmp_path / 'fsdp'}", skipping=True)
    torch.testing.assert_close(torch.tensor(sharded[0]["losses"]), torch.tensor(ranks[0]["losses"]),
                               rtol=1e-5, atol=1e-6)
    fsdp_weights = load_checkpoint(tmp_path / "fsdp" / "checkpoint_last.pt")["model"]
    for key, value in ranks[0]["model"].items():
        torch.testing.assert_close(fsdp_weights[key], value, rtol=1e-5, atol=1e-6)


def test_a_distributed_run_resumes_the_same_curve(tmp_path, small_data):
    common = ["common.threads=1", "common.tensorboard_dir=null", small_data]
    straight = run_two_processes(tmp_path, "a", *common, "optimization.max_update=8",
                                 f"checkpoint.save_dir={tmp_path / 'a'}")
    first = run_two_processes(tmp_path, "b1", *common, "optimization.max_update=4",
                              f"checkpoint.save_dir={tmp_path / 'b'}")
    state = load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")
    assert len(state["rng"]) == 2  # one RNG state per rank (dropout differs between ranks)
    second = run_two_processes(tmp_path, "b2", *common, "optimization.max_update=8",
                               f"checkpoint.save_dir={tmp_path / 'b'}")
    assert first[0]["losses"] + second[0]["losses"] == straight[0]["losses"]
    for key, value in straight[0]["model"].items():
        assert torch.equal(value, second[0]["model"][key]), key


def test_fsdp_trains_like_ddp_writes_full_checkpoints_and_resumes(tmp_path, ddp_run, small_data):
    common = ["model.dropout=0.0", "common.threads=1", "common.tensorboard_dir=null", small_data]
    _, ddp = ddp_run  # the same model, 6 updates with 2 processes (DDP)
    fsdp = run_two_processes(tmp_path, "fsdp1", *common, "optimization.max_update=3",
                             "common.distributed_strategy=fsdp", f"checkpoint.save_dir={tmp_path / 'fsdp'}")
    # the checkpoint holds full tensors (rank 0 wrote them), loadable without any process group
    state = load_checkpoint(tmp_path / "fsdp" / "checkpoint_last.pt")
    assert state["sharded_optimizer"] and state["num_updates"] == 3
    for key, value in ddp[0]["model"].items():
        assert state["model"][key].shape == value.shape, key
    resumed = run_two_processes(tmp_path, "fsdp2", *common, "optimization.max_update=6",
                                "common.distributed_strategy=fsdp", f"checkpoint.save_dir={tmp_path / 'fsdp'}")
    # sharded training makes the same updates as replicated training, across the resume too
    torch.testing.assert_close(torch.tensor(fsdp[0]["losses"] + resumed[0]["losses"]),
                               torch.tensor(ddp[0]["losses"]), rtol=1e-5, atol=1e-6)
    final = load_checkpoint(tmp_path / "fsdp" / "checkpoint_last.pt")["model"]
    for key, value in ddp[0]["model"].items():
        torch.testing.assert_close(final[key], value, rtol=1e-4, atol=1e-5)
    # a sharded run's optimizer state cannot silently resume a replicated run
    with pytest.raises(CheckpointError, match="distributed_strategy"):
        train(compose_train_config([*SMALL, *common, "optimization.max_update=8",
                                    f"checkpoint.save_dir={tmp_path / 'fsdp'}"]))
