"""Tiny training runs (``tests.training.test_train.TINY``) that several tests read but never write
to, each trained once a session instead of once per test. They share one binarized data folder
(``task.destdir``), as does every test here that trains on the same tiny toy corpus."""

import pytest

from tests.training.test_train import config
from toolkit.training.train import train


class TinyRun:
    """A finished run: its folder and ``train()``'s result."""

    def __init__(self, save_dir, result):
        self.save_dir, self.result = save_dir, result


@pytest.fixture(scope="session")
def tiny_three_updates(tmp_path_factory):
    """3 updates; its ``data-bin`` is the shared binarized data (``tiny_data``)."""
    save_dir = tmp_path_factory.mktemp("tiny-3-updates")
    return TinyRun(save_dir, train(config(save_dir, "optimization.max_update=3")))


@pytest.fixture(scope="session")
def tiny_data(tiny_three_updates):
    """``task.destdir=...`` of the binarized tiny toy corpus: an up-to-date folder is only read."""
    return f"task.destdir={tiny_three_updates.save_dir / 'data-bin'}"


@pytest.fixture(scope="session")
def tiny_one_epoch(tmp_path_factory, tiny_data):
    save_dir = tmp_path_factory.mktemp("tiny-1-epoch")
    return TinyRun(save_dir, train(config(save_dir, tiny_data, "optimization.max_epoch=1")))


@pytest.fixture(scope="session")
def tiny_three_epochs(tmp_path_factory, tiny_data):
    """3 epochs, keeping the last 2 epoch checkpoints."""
    save_dir = tmp_path_factory.mktemp("tiny-3-epochs")
    return TinyRun(save_dir, train(config(save_dir, tiny_data, "optimization.max_epoch=3",
                                          "checkpoint.keep_last_epochs=2")))


@pytest.fixture(scope="session")
def tiny_bf16(tmp_path_factory, tiny_data):
    """40 updates under bf16 autocast."""
    save_dir = tmp_path_factory.mktemp("tiny-bf16")
    return TinyRun(save_dir, train(config(save_dir, tiny_data, "common.precision=bf16",
                                          "optimization.max_update=40")))
