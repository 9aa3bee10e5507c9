"""The task interface: it owns the data and vocabularies and builds what depends on them."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from toolkit.registry import Registries


class Task:
    """Prepares data, builds model and criterion for it, and serves batch iterators."""

    def __init__(self, cfg: Any, run_cfg: DictConfig):
        self.cfg, self.run_cfg = cfg, run_cfg

    def prepare(self) -> None:
        """Make the data ready (preprocess if needed) and load vocabularies."""
        raise NotImplementedError

    def check_splits(self, splits: list[str]) -> None:
        """Fail before any work unless ``prepare`` will make each of ``splits`` loadable."""

    def build_model(self, registries: Registries, model_cfg: Any):
        raise NotImplementedError

    def build_criterion(self, registries: Registries, criterion_cfg: Any):
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild the task without the data (vocabularies)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
