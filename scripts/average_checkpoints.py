#!/usr/bin/env python
"""Average the weights of several checkpoints into one loadable checkpoint.

    python scripts/average_checkpoints.py --dir RUN --last 5 --output RUN/checkpoint_avg5.pt
    (the newest 5 of RUN's epoch checkpoints, and of checkpoint_last.pt when a time limit ended
    the run mid-epoch)
    python scripts/average_checkpoints.py --inputs RUN/checkpoint8.pt RUN/checkpoint9.pt --output avg.pt

The output keeps the newest input's config, vocabulary and plugin records (so toolkit-generate
loads it as any checkpoint), holds the element-wise mean of every floating-point weight, and
drops optimizer and iterator state (it is for inference, not for resuming). It is written by
the core's inference-checkpoint writer, which first checks that the config rebuilds the model.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from toolkit.checkpoint import CheckpointError, load_checkpoint, save_inference_checkpoint
from toolkit.inference import rebuild_model
from toolkit.plugins import get_plugins


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


def write_average(paths: list[Path], output: Path) -> int:
    """Average ``paths`` into the inference checkpoint ``output``; returns its bytes."""
    newest, weights = average(paths)
    plugins = get_plugins()
    cfg = OmegaConf.create(newest["cfg"])
    task, model = rebuild_model(cfg, newest, plugins)
    model.load_state_dict(weights)
    return save_inference_checkpoint(output, cfg, task, model, plugins, roles=newest["plugins"].get("roles"),
                                     plugin_state=newest.get("plugin_state"), num_updates=newest.get("num_updates", 0),
                                     averaged_from=[str(p) for p in paths])


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
    size = write_average(paths, args.output)
    print(f"averaged {len(paths)} checkpoints ({', '.join(p.name for p in paths)}) into {args.output} "
          f"({size:,} bytes)")


if __name__ == "__main__":
    main()
