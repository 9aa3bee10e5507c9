r"""What ``torch.compile`` does with LayerDrop: graphs compiled, recompile-limit fallbacks, time.

    python -m layerdrop.compile_check --updates 40 --rate 0.2 --threads 2 [--layers 6]

Trains a toy ``transformer_tiny``-width model with ``--layers`` blocks on each side for
``--updates`` updates three times in this process: eager with LayerDrop, compiled
(``common.compile=true``, inductor) without it, compiled with it. For each it prints the
wall-clock, dynamo's count of distinct graphs and of frames it converted, and the warnings
dynamo gave when a frame hit ``torch._dynamo.config.recompile_limit`` (from then on that frame
runs eagerly). The set of skipped blocks is a Python value the compiled forward branches on,
so each new set is a new graph until that limit.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from toolkit.config import compose_train_config
from toolkit.plugins import load_plugins

TOY = ["task.toy_pairs=2000", "task.vocab_size=500", "task.splits=[train,valid]", "model=transformer_tiny",
       "dataset.max_tokens=1024", "common.log_format=none", "common.tensorboard_dir=null",
       "checkpoint.no_save=true", "optimization.max_epoch=0", "optimization.max_time_minutes=0"]


class LimitWarnings(logging.Handler):
    """Collects dynamo's log records about the recompile limit."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "recompile_limit" in message or "cache_size_limit" in message:
            self.messages.append(message.splitlines()[0])


def run(compiled: bool, rate: float, args: argparse.Namespace, workdir: Path) -> dict:
    """One training run; returns its wall-clock and dynamo's counters."""
    from torch._dynamo.utils import counters

    from toolkit.training.train import train

    torch._dynamo.reset()
    counters.clear()
    handler = LimitWarnings()
    logging.getLogger("torch._dynamo").addHandler(handler)
    overrides = [*TOY, f"model.encoder_layers={args.layers}", f"model.decoder_layers={args.layers}",
                 f"common.compile={str(compiled).lower()}", f"common.threads={args.threads}",
                 f"optimization.max_update={args.updates}", f"checkpoint.save_dir={workdir}",
                 f"task.destdir={workdir / 'data-bin'}"]
    if rate > 0:
        overrides += [f"+plugins.options.layerdrop.encoder_rate={rate}", f"+plugins.options.layerdrop.decoder_rate={rate}"]
    start = time.perf_counter()
    history = train(compose_train_config(overrides), load_plugins())
    seconds = time.perf_counter() - start
    logging.getLogger("torch._dynamo").removeHandler(handler)
    return {"compiled": compiled, "rate": rate, "updates": history["num_updates"], "seconds": round(seconds, 1),
            "unique_graphs": counters["stats"]["unique_graphs"], "frames": counters["frames"]["total"],
            "limit_warnings": handler.messages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--rate", type=float, default=0.2, help="LayerDrop rate on both sides")
    parser.add_argument("--layers", type=int, default=6, help="blocks on each side")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for compiled, rate in ((False, args.rate), (True, 0.0), (True, args.rate)):
            row = run(compiled, rate, args, Path(tmp) / f"run-{compiled}-{rate}")
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
