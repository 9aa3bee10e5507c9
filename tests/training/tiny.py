"""A training config of a few seconds, for tests: 300 toy pairs, one layer a side, 3 updates,
no validation unless asked (``dataset.valid_subset=valid``)."""

from pathlib import Path

from omegaconf import DictConfig

from toolkit.config import compose_train_config
from toolkit.data.toy_corpus import write_toy_corpus


def tiny_config(tmp_path: Path, *overrides: str) -> DictConfig:
    """The config of a tiny run saving to ``tmp_path/run`` on text in ``tmp_path/text``."""
    data = write_toy_corpus(tmp_path / "text", n_train=300, n_valid=20, n_test=20)
    return compose_train_config([
        f"task.data={data}", "task.source_lang=src", "task.target_lang=tgt", "task.vocab_size=200",
        "task.splits=[train,valid]", "dataset.max_positions=64", "dataset.max_tokens=512",
        "model.encoder_layers=1", "model.decoder_layers=1", "common.log_format=none",
        "common.tensorboard_dir=null", "dataset.valid_subset=null", "optimization.max_update=3",
        f"checkpoint.save_dir={tmp_path / 'run'}", *overrides])


def checkpoint_names(tmp_path: Path) -> list[str]:
    """The checkpoint files in ``tmp_path/run`` (none when the folder does not exist)."""
    return sorted(p.name for p in (tmp_path / "run").glob("*.pt"))
