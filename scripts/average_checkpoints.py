#!/usr/bin/env python
"""Average the weights of several checkpoints into one loadable checkpoint.

    python scripts/average_checkpoints.py --dir RUN --last 5 --output RUN/checkpoint_avg5.pt
    (the newest 5 of RUN's epoch checkpoints, and of checkpoint_last.pt when a time limit ended
    the run mid-epoch)
    python scripts/average_checkpoints.py --inputs RUN/checkpoint8.pt RUN/checkpoint9.pt --output avg.pt

The output keeps the newest input's config, vocabulary and plugin records (so toolkit-generate
loads it as any checkpoint), holds the element-wise mean of every floating-point weight, and
drops optimizer and iterator state (it is for inference, not for resuming).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from toolkit.training.checkpoint import CheckpointError, load_checkpoint, save_atomic


def epoch_checkpoints(folder: Path) -> list[Path]:
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


def average(paths: list[Path]) -> dict:
    """The newest checkpoint's state with the mean of all their model weights."""
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
    keep = ("cfg", "task", "plugins", "plugin_state", "toolkit_version", "num_updates")
    result = {k: states[-1][k] for k in keep if k in states[-1]}
    result["model"] = averaged
    result["averaged_from"] = [str(p) for p in paths]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--inputs", nargs="+", type=Path, help="checkpoints to average")
    source.add_argument("--dir", type=Path, help="a run folder: average its newest checkpoints")
    parser.add_argument("--last", type=int, default=5,
                        help="with --dir: how many (epoch checkpoints, and checkpoint_last.pt if newer)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    paths = args.inputs or newest_checkpoints(args.dir, args.last)
    if not paths:
        sys.exit(f"no checkpoints (checkpoint<N>.pt, checkpoint_last.pt) in {args.dir}")
    save_atomic(average(paths), args.output)
    print(f"averaged {len(paths)} checkpoints ({', '.join(p.name for p in paths)}) into {args.output}")


if __name__ == "__main__":
    main()
