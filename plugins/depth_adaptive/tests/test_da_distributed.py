"""Multi-exit training under real two-process DDP (gloo) equals one process with the same global
batch: the per-block classifiers, used outside the model's forward, are synchronised too."""

from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp

from toolkit.config import compose_train_config
from toolkit.plugins import load_plugins
from toolkit.testing import free_port
from toolkit.training.train import train

import depth_adaptive.plugin

SMALL = ["criterion=depth_adaptive", "+plugins.options.depth_adaptive.classifiers=separate",
         "task.toy_pairs=400", "task.vocab_size=200", "task.splits=[train,valid]", "model.encoder_layers=1",
         "model.decoder_layers=3", "model.encoder_embed_dim=32", "model.decoder_embed_dim=32",
         "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64", "model.dropout=0.0", "dataset.max_tokens=256",
         "dataset.max_positions=64", "common.log_format=none", "common.threads=1", "lr_scheduler.warmup_updates=5",
         "optimization.max_update=4"]


def _session():
    return load_plugins(autoload=False, extra=[("depth_adaptive", depth_adaptive.plugin)])


def _worker(rank: int, port: int, save_dir: str, extra: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    history = train(compose_train_config([*SMALL, *extra, f"checkpoint.save_dir={save_dir}",
                                          f"common.tensorboard_dir={save_dir}/tb"]), _session())
    torch.save(history["model"].state_dict(), f"{save_dir}.rank{rank}")



def test_two_processes_equal_one_with_separate_classifiers(tmp_path, clean_config_store):
    threads = torch.get_num_threads()
    mp.start_processes(_worker, args=(free_port(), str(tmp_path / "ddp"), []), nprocs=2, start_method="spawn")
    ranks = [torch.load(f"{tmp_path / 'ddp'}.rank{r}", weights_only=True) for r in range(2)]
    single = train(compose_train_config([*SMALL, "optimization.update_freq=2", f"checkpoint.save_dir={tmp_path / 'one'}",
                                         "common.tensorboard_dir=null"]), _session())["model"].state_dict()
    torch.set_num_threads(threads)
    heads = [k for k in single if k.startswith("decoder.exit_heads.")]
    assert heads
    for key, value in single.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # the ranks stayed in step
        assert torch.allclose(ranks[0][key], value, atol=1e-5), key  # and equal one process


def test_mixed_self_distillation_keeps_the_ranks_in_step(tmp_path, clean_config_store):
    """Its full-depth forward without gradients goes through the DDP-wrapped model too."""
    extra = ["criterion.mode=mixed", "criterion.exit_distill_weight=0.5"]
    mp.start_processes(_worker, args=(free_port(), str(tmp_path / "ddp"), extra), nprocs=2, start_method="spawn")
    ranks = [torch.load(f"{tmp_path / 'ddp'}.rank{r}", weights_only=True) for r in range(2)]
    start = train(compose_train_config([*SMALL, "optimization.max_update=0", f"checkpoint.save_dir={tmp_path / 'start'}",
                                        "common.tensorboard_dir=null"]), _session())["model"].state_dict()
    for key, value in ranks[0].items():
        assert torch.equal(value, ranks[1][key]), key
    assert any(not torch.equal(value, start[key]) for key, value in ranks[0].items())  # and they trained
