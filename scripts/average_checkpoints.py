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
import sys
from pathlib import Path

from omegaconf import OmegaConf

from toolkit.averaging import average, newest_checkpoints
from toolkit.checkpoint import save_inference_checkpoint
from toolkit.inference import rebuild_model
from toolkit.plugins import get_plugins


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
