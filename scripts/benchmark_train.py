#!/usr/bin/env python
r"""Steady-state training throughput: target tokens/s, model FLOPs utilization, peak memory.

Builds the task, model and trainer exactly as ``toolkit-train`` does, runs ``--warmup``
updates that are not timed (allocator, caches, thread pools), then times ``--steps`` updates.
Data preparation and start-up are excluded.

MFU is the model's useful training FLOPs per second (matrix products only, counted from its
layer shapes without padding: ``toolkit.models.flops``) over the GEMM bound: the FLOP/s this
machine reaches, measured in the same run, on the same products at the shapes of a median
batch (forward and both backward products, in the training dtype). ``--profile N`` prints a
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

import torch

from toolkit.config import compose_train_config
from toolkit.models.flops import Gemm, training_flops, transformer_gemms
from toolkit.models.transformer import TransformerConfig
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
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after timing, profile N more updates and print the top operators")
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
            with closing(itr.next_epoch_itr()) as epoch:  # closing stops its prefetching thread
                for sample in epoch:
                    group.append(sample)
                    if len(group) == args.update_freq:
                        yield group
                        group = []

    stream = updates()
    for _ in range(args.warmup):
        trainer.train_step(next(stream))
    groups = [next(stream) for _ in range(args.steps)]  # collated before timing
    profiled = [next(stream) for _ in range(args.profile)]
    stream.close()
    flops = model_flops(model, task, [s for g in groups for s in g])
    # the GEMM bound is measured just before and just after the timed updates, so the
    # machine's drift (it is shared) affects both sides of the ratio alike
    bounds = [gemm_bound(flops[1], trainer)] if flops else []
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
    bounds += [gemm_bound(flops[1], trainer)] if flops else []
    table = profile_updates(trainer, profiled) if profiled else None
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
    if flops:
        rank_flops = flops[0]  # this rank's timed updates; ranks' batches are alike in size
        achieved = rank_flops * distributed.world_size / elapsed
        bound = sum(bounds) / len(bounds)
        print(f"model FLOPs/token   {rank_flops / (tokens / distributed.world_size) / 1e6:.1f} M (training)")
        print(f"achieved            {achieved / 1e9:.1f} GFLOP/s")
        print(f"GEMM bound          {bound / 1e9:.1f} GFLOP/s per process (same products, median batch; "
              f"{bounds[0] / 1e9:.1f} before, {bounds[1] / 1e9:.1f} after)")
        print(f"MFU                 {achieved / (bound * distributed.world_size):.1%}")
    print(f"{peak_label:<20}{peak:,.0f} MiB")
    if table:
        print(table)


def model_flops(model: torch.nn.Module, task, samples: list[dict]) -> tuple[int, list[Gemm]] | None:
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


def gemm_bound(gemms: list[Gemm], trainer: Trainer, repeats: int = 3) -> float:
    """FLOP/s of this machine on ``gemms``: each forward product and its two backward ones
    (input gradient, weight gradient) timed with ``torch.matmul`` in the training dtype."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[trainer.precision]
    device = trainer.device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    total_flops, total_seconds = 0, 0.0
    for g in gemms:  # laid out as nn.Linear: x (m, k) times weight (n, k) transposed
        batch = (g.batch,) if g.batch > 1 else ()  # a batch of one is a plain matrix product
        x = torch.randn(*batch, g.m, g.k, dtype=dtype, device=device)
        weight = torch.randn(*batch, g.n, g.k, dtype=dtype, device=device)
        grad = torch.randn(*batch, g.m, g.n, dtype=dtype, device=device)
        products = [(x, weight.transpose(-1, -2)), (grad, weight), (grad.transpose(-1, -2), x)]
        for left, right in products:  # warm-up
            torch.matmul(left, right)
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            for left, right in products:
                torch.matmul(left, right)
        sync()
        total_seconds += (time.perf_counter() - start) / repeats * g.count
        total_flops += 3 * g.flops
    return total_flops / total_seconds


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
