#!/usr/bin/env python
r"""Steady-state training throughput: target tokens/s, model FLOPs utilization, peak memory.

Builds the task, model and trainer exactly as ``toolkit-train`` does, runs ``--warmup``
updates that are not timed (allocator, caches, thread pools), then times ``--steps`` updates.
Data preparation and start-up are excluded.

MFU is the model's useful training FLOPs per second (matrix products only, counted from its
layer shapes without padding: ``toolkit.models.flops``) over the GEMM bound, the peak FLOP/s
of this machine on the same products, measured in the same run: each product of a median
batch (forward, input gradient, weight gradient, with ``torch.matmul`` in the training dtype)
is timed repeatedly, just before and just after the timed updates, and its best time is kept;
the bound is their total FLOPs over the sum of those best times. ``--profile N`` prints a
``torch.profiler`` table of the top operators over N more updates. Example (CPU, Multi30k)::

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
from contextlib import closing
from functools import partial
from typing import Callable, Iterator

import torch
from omegaconf import DictConfig

from toolkit.config import compose_train_config
from toolkit.models.flops import Gemm, training_flops, transformer_gemms
from toolkit.models.transformer import TransformerConfig
from toolkit.plugins import get_plugins
from toolkit.precision import dtype_of
from toolkit.tasks.base import Task
from toolkit.training.distributed import DistributedContext, init_distributed, shutdown
from toolkit.training.trainer import Trainer

Shape = tuple[int, int, int, int]  # a product's batch, m, k, n


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
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after timing, profile N more updates and print the top operators")
    parser.add_argument("--workdir", default="/tmp/toolkit-benchmark", help="binarized data goes here")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, key=value")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg, task, model, trainer, distributed = build(args)
    stream = updates(task, trainer, args.update_freq)
    for _ in range(args.warmup):
        trainer.train_step(next(stream))
    groups = [next(stream) for _ in range(args.steps)]  # collated before timing
    profiled = [next(stream) for _ in range(args.profile)]
    stream.close()
    flops = model_flops(model, task, [s for g in groups for s in g])
    dtype = dtype_of(trainer.precision)
    # the GEMM bound is measured just before and just after the timed updates, each product's
    # best time taken over both passes, so the machine's drift (it is shared) cannot lower it
    start = time.perf_counter()
    passes = [gemm_seconds(flops[1], trainer.device, dtype)] if flops else []
    bound_s = time.perf_counter() - start
    tokens, elapsed = time_updates(trainer, groups, distributed)
    start = time.perf_counter()
    passes += [gemm_seconds(flops[1], trainer.device, dtype)] if flops else []
    bound_s += time.perf_counter() - start
    table = profile_updates(trainer, profiled) if profiled else None
    padded = sum(s["target"].numel() for g in groups for s in g)
    tokens, padded = (int(x) for x in distributed.all_reduce_sum(torch.tensor([tokens, padded])))
    shutdown(distributed)
    if not distributed.is_master:
        return
    print(f"arch                {args.arch} ({cfg.common.precision}, {trainer.device}, "
          f"{distributed.world_size} process(es) x {torch.get_num_threads()} threads)")
    print(f"parameters          {model.num_parameters():,}")
    print(f"timed updates       {args.steps} (after {args.warmup} warm-up), {elapsed:.2f} s")
    print(f"target tokens/s     {tokens / elapsed:,.0f}")
    print(f"target padding      {1 - tokens / padded:.1%}")
    if flops:
        print_mfu(flops, passes, bound_s, tokens, elapsed, distributed.world_size)
    print_peak_memory(trainer.device)
    if table:
        print(table)


def build(args: argparse.Namespace) -> tuple[DictConfig, Task, torch.nn.Module, Trainer, DistributedContext]:
    """Config, task (data prepared), model and trainer, built as ``toolkit-train`` builds them."""
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
    criterion = task.build_criterion(plugins.registries, cfg.criterion)
    return cfg, task, model, Trainer(cfg, task, model, criterion, plugins, distributed), distributed


def updates(task: Task, trainer: Trainer, update_freq: int) -> Iterator[list[dict]]:
    """Endless groups of ``update_freq`` training batches of this rank, epoch after epoch."""
    max_positions = min(trainer.cfg.dataset.max_positions, *trainer.module.max_positions())
    distributed = trainer.distributed
    itr = task.batch_iterator(task.load_dataset("train", max_positions), train=True,
                              shard=(distributed.rank, distributed.world_size))
    while True:
        group = []
        with closing(itr.next_epoch_itr()) as epoch:  # closing stops its prefetching thread
            for sample in epoch:
                group.append(sample)
                if len(group) == update_freq:
                    yield group
                    group = []


def time_updates(trainer: Trainer, groups: list[list[dict]],
                 distributed: DistributedContext) -> tuple[int, float]:
    """Target tokens of this rank and wall-clock seconds of one update per group."""
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
        torch.cuda.reset_peak_memory_stats(trainer.device)
    distributed.barrier()
    tokens, start = 0, time.perf_counter()
    for group in groups:
        trainer.train_step(group)
        tokens += sum(s["ntokens"] for s in group)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    return tokens, time.perf_counter() - start


def print_mfu(flops: tuple[int, list[Gemm]], passes: list[dict[Shape, float]], bound_s: float, tokens: int,
              elapsed: float, world_size: int) -> None:
    """Model FLOPs per token, achieved FLOP/s, the GEMM bound (peak over both passes, which took
    ``bound_s`` seconds) and MFU."""
    rank_flops, gemms = flops  # this rank's timed updates; ranks' batches are alike in size
    achieved = rank_flops * world_size / elapsed
    peak = {shape: min(p[shape] for p in passes) for shape in passes[0]}
    bound = gemm_bound(gemms, peak)
    each = ", ".join(f"{gemm_bound(gemms, p) / 1e9:.1f}" for p in passes)
    print(f"model FLOPs/token   {rank_flops / (tokens / world_size) / 1e6:.1f} M (training)")
    print(f"achieved            {achieved / 1e9:.1f} GFLOP/s")
    print(f"GEMM bound          {bound / 1e9:.1f} GFLOP/s per process (peak: each product of a median batch at "
          f"its best time over both passes; the passes alone, before and after: {each}; {bound_s:.0f} s)")
    print(f"MFU                 {achieved / (bound * world_size):.1%}")


def print_peak_memory(device: torch.device) -> None:
    """Peak GPU memory allocated by torch, or this process's peak resident set on CPU."""
    if device.type == "cuda":
        print(f"{'peak GPU memory':<20}{torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB")
    else:
        print(f"{'peak RSS':<20}{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


def model_flops(model: torch.nn.Module, task: Task, samples: list[dict]) -> tuple[int, list[Gemm]] | None:
    """This rank's training FLOPs over ``samples`` and the products of a median batch
    (``None`` for models other than the Transformer)."""
    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, TransformerConfig):
        return None
    vocab = len(task.tgt_dict)
    pad = task.tgt_dict.pad
    lengths = [(int(s_len), int(t_len)) for s in samples
               for s_len, t_len in zip(s["net_input"]["src_lengths"], s["target"].ne(pad).sum(1))]
    median = sorted(samples, key=lambda s: s["ntokens"])[len(samples) // 2]
    batch, src_len = median["net_input"]["src_tokens"].shape
    return training_flops(cfg, vocab, lengths), transformer_gemms(cfg, vocab, batch, src_len, median["target"].size(1))


def shape_of(gemm: Gemm) -> Shape:
    """What sets the time of one call of ``gemm``'s products: batch and matrix sizes."""
    return gemm.batch, gemm.m, gemm.k, gemm.n


def gemm_seconds(gemms: list[Gemm], device: torch.device, dtype: torch.dtype) -> dict[Shape, float]:
    """For each distinct shape in ``gemms``, the best seconds of one call of its forward product
    plus its two backward ones (input gradient, weight gradient), with ``torch.matmul`` in ``dtype``
    on ``device``, laid out as ``nn.Linear``: x (m, k) times weight (n, k) transposed."""
    seconds: dict[Shape, float] = {}
    for g in gemms:
        if shape_of(g) in seconds:
            continue
        batch = (g.batch,) if g.batch > 1 else ()  # a batch of one is a plain matrix product
        x = torch.randn(*batch, g.m, g.k, dtype=dtype, device=device)
        weight = torch.randn(*batch, g.n, g.k, dtype=dtype, device=device)
        grad = torch.randn(*batch, g.m, g.n, dtype=dtype, device=device)
        products = [(x, weight.transpose(-1, -2)), (grad, weight), (grad.transpose(-1, -2), x)]
        seconds[shape_of(g)] = sum(best_seconds(partial(torch.matmul, left, right), device)
                                   for left, right in products)
    return seconds


def best_seconds(call: Callable[[], object], device: torch.device, min_samples: int = 5, patience: int = 5,
                 budget_s: float = 2.0, sample_s: float = 2e-3) -> float:
    """The best (minimum) seconds of one ``call``: a peak, not a mean.

    Two untimed calls warm up (kernel choice, allocation, thread pools); the second's time sets
    how many back-to-back calls make one sample (about ``sample_s`` seconds, so that timer and
    synchronization overhead vanish on small products). Samples are taken until at least
    ``min_samples`` are in and the best has not improved by 1% over the last ``patience``, or
    the ``budget_s`` for this call is spent (never fewer than ``min_samples``)."""

    def sample(calls: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) / calls

    sample(1)
    calls = max(1, round(sample_s / sample(1)))
    best, stale, taken, deadline = float("inf"), 0, 0, time.perf_counter() + budget_s
    while taken < min_samples or (stale < patience and time.perf_counter() < deadline):
        seconds = sample(calls)
        stale = 0 if seconds < 0.99 * best else stale + 1
        best, taken = min(best, seconds), taken + 1
    return best


def gemm_bound(gemms: list[Gemm], seconds: dict[Shape, float]) -> float:
    """FLOP/s of ``gemms`` (forward and both backward products, ``count`` calls of each) at the
    per-call ``seconds`` of :func:`gemm_seconds`: their total FLOPs over the sum of their best times."""
    return sum(3 * g.flops for g in gemms) / sum(g.count * seconds[shape_of(g)] for g in gemms)


def profile_updates(trainer: Trainer, groups: list[list[dict]]) -> str:
    """A ``torch.profiler`` table of the operators that took the most time over ``groups``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for group in groups:
            trainer.train_step(group)
    sort_by = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort_by, row_limit=25)


if __name__ == "__main__":
    main()
