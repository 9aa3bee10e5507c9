"""LayerDrop under real two-process DDP (gloo): both ranks skip the same blocks (DDP would fail
or drift otherwise), and the weights equal one process with the same global batch."""

from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp

from toolkit.testing import free_port
from toolkit.training.train import train

from layerdrop_testing import RATES, session, small_config

COMMON = [*RATES, "model.dropout=0.0", "optimization.max_update=6", "task.toy_pairs=300"]


def _worker(rank: int, port: int, save_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    history = train(small_config(*COMMON, f"checkpoint.save_dir={save_dir}"), session())
    torch.save({"model": history["model"].state_dict(), "losses": history["train_losses"]}, f"{save_dir}.rank{rank}")



def test_two_processes_skip_the_same_blocks_and_equal_one(tmp_path, clean_config_store):
    threads = torch.get_num_threads()
    mp.start_processes(_worker, args=(free_port(), str(tmp_path / "ddp")), nprocs=2, start_method="spawn")
    ranks = [torch.load(f"{tmp_path / 'ddp'}.rank{r}", weights_only=True) for r in range(2)]
    single = train(small_config(*COMMON, "optimization.update_freq=2", f"checkpoint.save_dir={tmp_path / 'one'}"),
                   session())
    torch.set_num_threads(threads)
    weights = single["model"].state_dict()
    for key, value in weights.items():
        assert torch.equal(ranks[0]["model"][key], ranks[1]["model"][key]), key  # the ranks stayed in step
        torch.testing.assert_close(ranks[0]["model"][key], value, rtol=1e-4, atol=1e-5)  # and equal one process
    torch.testing.assert_close(torch.tensor(ranks[0]["losses"]), torch.tensor(single["train_losses"]),
                               rtol=1e-5, atol=1e-6)
