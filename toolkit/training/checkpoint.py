"""Checkpoints: atomic writes, safe loading, and which files to keep.

A checkpoint is tensors and plain containers only, so ``torch.load(weights_only=True)`` reads
it: no pickled code runs when loading a file from elsewhere.
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

logger = logging.getLogger(__name__)

LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit this toolkit."""


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, flush to disk, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU without running any code it might contain."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({path.stat().st_size} bytes): it is truncated, corrupt "
            f"or holds objects other than tensors and plain containers ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})") from error
    if not isinstance(state, dict) or "cfg" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a toolkit checkpoint (no cfg/model entries)")
    return state


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
        save_atomic(state, self.last_path)
        written = [self.last_path]
        copies = []
        if epoch is not None and self.keep_last_epochs != 0:
            copies.append(self.save_dir / f"checkpoint{epoch}.pt")
        if better:
            copies.append(self.save_dir / BEST)
        for path in copies:  # copy the finished file, then rename: still atomic
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            shutil.copyfile(self.last_path, tmp)
            os.replace(tmp, path)
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
