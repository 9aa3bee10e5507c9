"""A run's checkpoint files (last, best, per epoch) and the RNG state they carry.

The format, safe loading and the plugin checks are in ``toolkit.checkpoint``, which inference
shares.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from toolkit.checkpoint import save_checkpoint
from toolkit.files import atomic_write_with

logger = logging.getLogger(__name__)

LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:  # random.setstate wants tuples; a loaded state may hold lists
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class CheckpointManager:
    """Writes ``checkpoint_last.pt``, ``checkpoint_best.pt`` and ``checkpoint{epoch}.pt``."""

    def __init__(self, save_dir: str | os.PathLike, keep_last_epochs: int, maximize: bool = False):
        self.save_dir = Path(save_dir)
        self.keep_last_epochs = keep_last_epochs
        self.maximize = maximize
        self.best: float | None = None

    @property
    def last_path(self) -> Path:
        return self.save_dir / LAST

    def is_better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.maximize else value < self.best

    def save(self, state: dict[str, Any], epoch: int | None, metric: float | None) -> list[Path]:
        """Save ``state`` as last; as ``checkpoint{epoch}`` at an epoch end; as best if it is."""
        better = metric is not None and self.is_better(metric)
        if better:
            self.best = metric
        state["best_metric"] = self.best
        save_checkpoint(state, self.last_path)
        written = [self.last_path]
        copies = []
        if epoch is not None and self.keep_last_epochs != 0:
            copies.append(self.save_dir / f"checkpoint{epoch}.pt")
        if better:
            copies.append(self.save_dir / BEST)
        for path in copies:  # copy the finished file, then rename: still atomic
            with open(self.last_path, "rb") as source:
                atomic_write_with(path, lambda f: shutil.copyfileobj(source, f))
            written.append(path)
        self._prune()
        return written

    def _prune(self) -> None:
        if self.keep_last_epochs < 0:
            return
        epochs = sorted(
            (int(m.group(1)), p) for p in self.save_dir.glob("checkpoint*.pt")
            if (m := re.fullmatch(r"checkpoint(\d+)\.pt", p.name)))
        for _, path in epochs[: max(0, len(epochs) - self.keep_last_epochs)]:
            path.unlink()
