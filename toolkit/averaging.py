"""The average of several checkpoints' weights (``scripts/average_checkpoints.py``, and any
command, core or plugin, that ships a run's averaged model)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from toolkit.checkpoint import CheckpointError, load_checkpoint


def epoch_checkpoints(folder: Path) -> list[Path]:
    """A run's ``checkpoint<N>.pt`` files, oldest epoch first."""
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint*.pt")
             if (m := re.fullmatch(r"checkpoint(\d+)\.pt", p.name))]
    return [p for _, p in sorted(found)]


def newest_checkpoints(folder: Path, count: int) -> list[Path]:
    """A run's newest ``count`` checkpoints: its epoch checkpoints, and ``checkpoint_last.pt``
    when it holds more updates than all of them (a run stopped mid-epoch by time or updates)."""
    paths = epoch_checkpoints(folder)
    last = folder / "checkpoint_last.pt"
    if last.exists() and (not paths or load_checkpoint(last)["num_updates"] > load_checkpoint(paths[-1])["num_updates"]):
        paths.append(last)
    return paths[-count:]


def average(paths: list[Path]) -> tuple[dict, dict[str, torch.Tensor]]:
    """The newest checkpoint's state, and the mean of all their model weights."""
    states = [load_checkpoint(p) for p in paths]
    keys = states[-1]["model"].keys()
    for path, state in zip(paths, states):
        if state["model"].keys() != keys:
            raise CheckpointError(f"{path} has different parameters from {paths[-1]}: cannot average")
    averaged = {}
    for key in keys:
        tensors = [s["model"][key] for s in states]
        if tensors[0].is_floating_point():
            averaged[key] = torch.stack([t.double() for t in tensors]).mean(0).to(tensors[0].dtype)
        else:
            averaged[key] = tensors[-1]
    return states[-1], averaged
