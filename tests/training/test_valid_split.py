"""A missing validation split is decided before any work: an error, or no validation if asked."""

import logging

import pytest

from toolkit.checkpoint import load_checkpoint
from toolkit.config import ConfigError
from toolkit.data.preprocess import DataError
from toolkit.training import train as train_module
from toolkit.training.train import train

from tests.training.tiny import checkpoint_names, tiny_config


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a run gets as far as building its model."""
    def build(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(train_module, "_build_model", build)


def test_a_missing_valid_split_fails_before_any_work_naming_the_files_and_the_fixes(tmp_path, no_model):
    cfg = tiny_config(tmp_path, "dataset.valid_subset=valid")
    for lang in ("src", "tgt"):
        (tmp_path / "text" / f"valid.{lang}").unlink()
    with pytest.raises(DataError) as error:
        train(cfg)
    message = str(error.value)
    assert f"split 'valid': missing {tmp_path / 'text' / 'valid.src'} and {tmp_path / 'text' / 'valid.tgt'}" in message
    assert "dataset.valid_subset=null" in message and "dataset.valid_subset=NAME" in message
    assert not (tmp_path / "run").exists()  # nothing prepared, no folder left


def test_a_valid_split_left_out_of_task_splits_fails_before_any_work(tmp_path, no_model):
    with pytest.raises(DataError, match=r"split 'dev' is not in task.splits=\['train', 'valid'\]"):
        train(tiny_config(tmp_path, "dataset.valid_subset=dev"))


def test_valid_subset_null_trains_without_validation_and_says_so(tmp_path, caplog):
    cfg = tiny_config(tmp_path, "task.splits=[train]", "optimization.max_update=2")
    with caplog.at_level(logging.WARNING, logger="toolkit.train"):
        result = train(cfg)
    assert result["num_updates"] == 2 and result["valid"] == []
    assert "training without validation (dataset.valid_subset=null)" in caplog.text
    assert checkpoint_names(tmp_path) == ["checkpoint_last.pt"]
    assert load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["best_metric"] is None


def test_validation_bleu_needs_a_valid_split(tmp_path):
    with pytest.raises(ConfigError, match="validation.bleu translates the valid split"):
        train(tiny_config(tmp_path, "validation.bleu=true"))
