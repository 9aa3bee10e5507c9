#!/usr/bin/env python
"""Steady-state training throughput: target tokens/s, peak memory and parameters.

Builds the task, model and trainer exactly as ``toolkit-train`` does, runs ``--warmup``
updates that are not timed (allocator, caches, thread pools), then times ``--steps`` updates.
Data preparation and start-up are excluded. Example (CPU, Multi30k de->en)::

    python scripts/benchmark_train.py --data ../shared/data/multi30k-task1 --source-lang de \
        --target-lang en --arch transformer_small --max-tokens 4096 --threads 2

Any further ``key=value`` arguments are passed to the config as overrides. Under torchrun it
measures data-parallel training (tokens/s summed over ranks, printed by rank 0)::

    torchrun --nproc_per_node=2 scripts/benchmark_train.py --threads 1 ...
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from toolkit.config import compose_train_config
from toolkit.plugins import get_plugins
from toolkit.training.distributed import init_distributed, shutdown
from toolkit.training.trainer import Trainer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder of {split}.{lang} text; omitted: the toy corpus")
    parser.add_argument("--source-lang", default="src")
    parser.add_argument("--target-lang", default="tgt")
    parser.add_argument("--arch", default="transformer_small")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--update-freq", type=int, default=1)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=10, help="untimed updates")
    parser.add_argument("--steps", type=int, default=50, help="timed updates")
    parser.add_argument("--workdir", default="/tmp/toolkit-benchmark", help="binarized data goes here")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, key=value")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    overrides = [
        f"model={args.arch}", f"task.vocab_size={args.vocab_size}", f"dataset.max_tokens={args.max_tokens}",
        f"optimization.update_freq={args.update_freq}", f"common.precision={args.precision}",
        f"common.device={args.device}", f"checkpoint.save_dir={args.workdir}",
        f"task.destdir={args.workdir}/data-bin-{args.source_lang}-{args.target_lang}-{args.vocab_size}",
    ]
    if args.data:
        overrides += [f"task.data={args.data}", f"task.source_lang={args.source_lang}",
                      f"task.target_lang={args.target_lang}"]
    cfg = compose_train_config(overrides + args.overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.common.seed)
    plugins = get_plugins()
    distributed = init_distributed(cfg.common.device)
    task = plugins.registries.task.build(cfg.task, cfg)
    if distributed.is_master:
        task.prepare()
    distributed.barrier()
    task.prepare()
    model = task.build_model(plugins.registries, cfg.model)
    plugins.hook.toolkit_modify_model(model=model, cfg=cfg)
    trainer = Trainer(cfg, task, model, task.build_criterion(plugins.registries, cfg.criterion), plugins,
                      distributed)
    max_positions = min(cfg.dataset.max_positions, *model.max_positions())
    itr = task.batch_iterator(task.load_dataset("train", max_positions), train=True,
                              shard=(distributed.rank, distributed.world_size))

    def updates():
        while True:
            group = []
            for sample in itr.next_epoch_itr():
                group.append(sample)
                if len(group) == args.update_freq:
                    yield group
                    group = []

    stream = updates()
    for _ in range(args.warmup):
        trainer.train_step(next(stream))
    groups = [next(stream) for _ in range(args.steps)]  # collated before timing
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    distributed.barrier()
    tokens, start = 0, time.perf_counter()
    for group in groups:
        trainer.train_step(group)
        tokens += sum(s["ntokens"] for s in group)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    padded = sum(s["target"].numel() for g in groups for s in g)
    tokens, padded = (int(x) for x in distributed.all_reduce_sum(torch.tensor([tokens, padded])))
    shutdown(distributed)
    if not distributed.is_master:
        return
    if trainer.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        peak_label = "peak GPU memory"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_label = "peak RSS"
    print(f"arch                {args.arch} ({cfg.common.precision}, {trainer.device}, "
          f"{distributed.world_size} process(es) x {torch.get_num_threads()} threads)")
    print(f"parameters          {model.num_parameters():,}")
    print(f"timed updates       {args.steps} (after {args.warmup} warm-up), {elapsed:.2f} s")
    print(f"target tokens/s     {tokens / elapsed:,.0f}")
    print(f"target padding      {1 - tokens / padded:.1%}")
    print(f"{peak_label:<20}{peak:,.0f} MiB")


if __name__ == "__main__":
    main()
