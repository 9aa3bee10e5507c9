"""max_update landing on an epoch's last batch ends that epoch properly."""

from contextlib import closing

from toolkit.checkpoint import load_checkpoint
from toolkit.data.batching import EpochBatchIterator
from toolkit.tasks.translation import TranslationTask
from toolkit.training.train import train

from tests.training.tiny import checkpoint_names, tiny_config


SHORT = ["dataset.max_positions=20", "dataset.max_tokens=256"]  # an epoch of a few short batches


def train_iterator(cfg) -> EpochBatchIterator:
    """The training run's batches (its max_positions: no model's limit is lower here)."""
    task = TranslationTask(cfg.task, cfg)
    task.prepare()
    return task.batch_iterator(task.load_dataset(cfg.dataset.train_subset, cfg.dataset.max_positions), train=True)


def test_an_iterator_stopped_after_its_last_batch_has_ended_the_epoch(tmp_path):
    itr = train_iterator(tiny_config(tmp_path, *SHORT))
    n = len(itr)
    assert n >= 2
    with closing(itr.next_epoch_itr()) as batches:
        for i, _ in enumerate(batches, start=1):
            if i == n - 1:
                break
    assert (itr.epoch, itr.iterations_in_epoch, itr.end_of_epoch()) == (1, n - 1, False)
    itr.load_state_dict({"epoch": 1, "iterations_in_epoch": 0})
    with closing(itr.next_epoch_itr()) as batches:
        for i, _ in enumerate(batches, start=1):
            if i == n:
                break  # as the training loop does at max_update: the generator is closed, not exhausted
    assert itr.end_of_epoch() and itr.state_dict() == {"epoch": 2, "iterations_in_epoch": 0}


def test_max_update_on_the_last_batch_writes_the_epoch_checkpoint(tmp_path):
    batches = len(train_iterator(tiny_config(tmp_path, *SHORT)))
    result = train(tiny_config(tmp_path, *SHORT, f"optimization.max_update={batches}", "dataset.valid_subset=valid"))
    assert result["num_updates"] == batches and result["epoch"] == 1
    assert "checkpoint1.pt" in checkpoint_names(tmp_path)
    state = load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")
    assert state["iterator"] == {"epoch": 2, "iterations_in_epoch": 0}
    assert len(result["valid"]) == 1 and state["best_metric"] == result["valid"][0]["loss"]


def test_a_best_metric_that_validation_does_not_report_is_said(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="toolkit.train"):
        train(tiny_config(tmp_path, "dataset.valid_subset=valid", "checkpoint.best_metric=bleuu"))
    assert "checkpoint.best_metric=bleuu is not among this validation's metrics (loss, nll_loss, ppl)" in caplog.text
    assert "checkpoint_best.pt" not in checkpoint_names(tmp_path)
