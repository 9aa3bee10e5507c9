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
        state["saved_as"] = {"epoch": epoch, "best": better}  # the copies this save makes: see reconcile
        save_checkpoint(state, self.last_path)
        written = [self.last_path]
        for path in self._copies(epoch, better):
            self._copy_last(path)
            written.append(path)
        self._prune()
        return written

    def reconcile(self, state: dict[str, Any]) -> list[Path]:
        """Re-create the epoch and best copies of the save that wrote ``checkpoint_last.pt``
        (``state``) where they do not hold it: a kill between the writes of one save.

        :return: the files re-created.
        """
        saved_as = state.get("saved_as") or {}
        expected = (state.get("num_updates"), state.get("best_metric"))
        repaired = [path for path in self._copies(saved_as.get("epoch"), bool(saved_as.get("best")))
                    if _identity(path) != expected]
        for path in repaired:
            self._copy_last(path)
        if repaired:
            logger.warning("re-created %s from %s (update %s): the save that wrote them was interrupted",
                           ", ".join(p.name for p in repaired), LAST, expected[0])
            self._prune()
        return repaired

    def _copies(self, epoch: int | None, best: bool) -> list[Path]:
        copies = []
        if epoch is not None and self.keep_last_epochs != 0:
            copies.append(self.save_dir / f"checkpoint{epoch}.pt")
        if best:
            copies.append(self.save_dir / BEST)
        return copies

    def _copy_last(self, path: Path) -> None:
        with open(self.last_path, "rb") as source:  # copy the finished file, then rename: still atomic
            atomic_write_with(path, lambda f: shutil.copyfileobj(source, f))

    def _prune(self) -> None:
        if self.keep_last_epochs < 0:
            return
        epochs = sorted(
            (int(m.group(1)), p) for p in self.save_dir.glob("checkpoint*.pt")
            if (m := re.fullmatch(r"checkpoint(\d+)\.pt", p.name)))
        for _, path in epochs[: max(0, len(epochs) - self.keep_last_epochs)]:
            path.unlink()


def _identity(path: Path) -> tuple[Any, Any] | None:
    """``(num_updates, best_metric)`` of a checkpoint file, or None if it is missing or unreadable."""
    try:  # mmap: only the small entries are read, not the weights
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return state.get("num_updates"), state.get("best_metric")
    except Exception:
        return None
