#!/usr/bin/env python
r"""Decoding speed of a checkpoint without I/O: sentences/s, target tokens/s, peak memory.

    python scripts/benchmark_generate.py --checkpoint RUN/checkpoint_best.pt \
        --source ../shared/data/multi30k-task1/test.de --reference ../shared/data/multi30k-task1/test.en \
        --beam 5 --batch 64 --threads 2 [--compare-ct2]

The source text is read and tokenized before timing; a warm-up pass on the first batch is not
timed. With --reference it also prints sacreBLEU, so speed and quality come from one run.
With --compare-ct2 the checkpoint is exported to CTranslate2 (float32) and the same
sentences are decoded by both, one after the other in this process, with the same beam,
batch, length penalty and threads; it prints both speeds, their ratio and the fraction of
identical hypotheses.

With --plugin-option PLUGIN.KEY=VALUE (repeatable) the checkpoint is loaded with those plugin
options (as toolkit-generate's +plugin_options), e.g. pruned at load time; with --side-by-side
the checkpoint is also loaded without them, and both settings are decoded in alternating rounds
(--rounds) in this one run, printing each one's speed, BLEU, parameters and their time ratio:

    python scripts/benchmark_generate.py --checkpoint CKPT --source SRC --reference REF \
        --plugin-option layerdrop.decoder_layers_to_keep=[0,2,4] --side-by-side

With --exit-policy NAME (and --exit-option KEY=VALUE, repeatable) the same sentences are decoded
at full depth and with that registered exit policy in alternating rounds, printing BLEU, the
average exit and the exit histogram of each, and their time ratio:

    python scripts/benchmark_generate.py --checkpoint CKPT --source SRC --reference REF \
        --exit-policy confidence --exit-option threshold=0.8

With --exit-after-block N it measures what early exits save in wall-clock time: the same
sentences are decoded at full depth, with the ``fixed_depth`` exit policy stopping every
hypothesis after block N (the blocks above then only add keys/values for it), and by the model truncated to N
blocks (the floor), in alternating rounds (--rounds) so that machine drift hits all three.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
import time

import torch
from omegaconf import OmegaConf

from toolkit.inference import checkpoint_paths, describe_checkpoints
from toolkit.config import parse_plugin_options
from toolkit.data.preprocess import read_lines
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.report import SpeedMeter, decode_alternately
from toolkit.generation.translator import Translator
from toolkit.precision import add_precision_argument
from toolkit.scoring.bleu import score


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint, or several joined by ':' (an ensemble)")
    parser.add_argument("--source", required=True)
    parser.add_argument("--reference")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--lenpen", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=64, help="sentences per batch")
    parser.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1,
                        help="decoding processes (CPU), sharing --threads between them (Translator(workers=))")
    parser.add_argument("--device", default="auto")
    add_precision_argument(parser)
    parser.add_argument("--plugin-option", action="append", default=[], metavar="PLUGIN.KEY=VALUE",
                        help="plugin option merged over the checkpoint's (repeatable)")
    parser.add_argument("--side-by-side", action="store_true",
                        help="also decode without the --plugin-option settings, in alternating rounds")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's operators by self CPU time over one more decode")
    parser.add_argument("--compare-ct2", action="store_true", help="also decode with CTranslate2 and compare")
    parser.add_argument("--exit-policy", metavar="NAME", help="compare full depth with this exit policy")
    parser.add_argument("--exit-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of --exit-policy, read as YAML (repeatable)")
    parser.add_argument("--exit-after-block", type=int, metavar="N",
                        help="compare full depth, every hypothesis exiting after block N, and N blocks")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds for --exit-after-block and --side-by-side")
    args = parser.parse_args()
    if args.compare_ct2 and len(checkpoint_paths(args.checkpoint)) > 1:
        parser.error("--compare-ct2 exports one model: an ensemble (--checkpoint a.pt:b.pt) has no CTranslate2 export")
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sources = read_lines(args.source)[: args.limit]
    references = read_lines(args.reference)[: args.limit] if args.reference else None
    options = parse_plugin_options(args.plugin_option)
    translator = load(args, options)
    print(f"checkpoint   {describe_checkpoints(checkpoint_paths(args.checkpoint), translator.model)}" + (f" with {options}" if options else ""))
    if args.side_by_side:
        compare_settings(args, {f"with {options}": translator, "as saved": load(args, {})}, sources, references)
        return
    if args.exit_policy:
        policy = {"_name": args.exit_policy, **OmegaConf.to_container(OmegaConf.from_dotlist(args.exit_option))}
        exiting = Translator(translator.task, translator.model, GenerationConfig(
            beam=args.beam, lenpen=args.lenpen, exit_policy=policy), max_sentences=args.batch)
        compare_settings(args, {"full depth": translator, str(policy): exiting}, sources, references)
        return
    translator.translate(sources[: args.batch * args.workers])  # warm-up (every worker)
    meter = SpeedMeter(translator.device)
    with meter:
        translations = translator.translate(sources)
    meter.add(translations)
    ours = [t.text for t in translations]
    workers = f" in {args.workers} processes" if args.workers > 1 else ""
    print(f"beam {args.beam}, batch {args.batch} sentences, {torch.get_num_threads()} threads{workers}, {translator.device}")
    print(f"toolkit      {meter.summary()}")
    if references:
        print(f"toolkit      {score(ours, references).lines()[0]}")
    if args.profile:
        profile(translator, sources)
    if args.compare_ct2:
        compare_ct2(args, translator, sources, references, ours, meter)
    if args.exit_after_block:
        compare_exits(args, translator, sources)


def profile(translator: Translator, sources: list[str], rows: int = 15) -> None:
    """Where decoding spends its time: the top operators by self CPU time, one more decode."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as recorded:
        translator.translate(sources)
    print(recorded.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def load(args: argparse.Namespace, plugin_options: dict) -> Translator:
    return Translator.from_checkpoint(args.checkpoint, GenerationConfig(beam=args.beam, lenpen=args.lenpen),
                                      device=args.device, plugin_options=plugin_options, precision=args.precision,
                                      max_sentences=args.batch, workers=args.workers)


def compare_settings(args: argparse.Namespace, runs: dict[str, Translator], sources: list[str],
                     references: list[str] | None) -> None:
    """Two settings of one checkpoint, decoded in alternating rounds in this run."""
    totals = decode_alternately(runs, sources, args.rounds)
    print(f"side by side: {args.rounds} rounds of {len(sources)} sentences, beam {args.beam}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads")
    for name, run in totals.items():
        bleu = f"   BLEU {score(run['outputs'], references).bleu:.2f}" if references else ""
        print(f"  {name:<40} {len(sources) * args.rounds / run['seconds']:8.1f} sentences/s "
              f"{run['tokens'] / run['seconds']:9.1f} tokens/s   {runs[name].model.num_parameters():,} parameters{bleu}")
        generator = runs[name].generator
        if generator.exit_policy is not None:
            shares = ", ".join(f"{share:.1%}" for share in generator.exit_histogram())
            print(f"  {'':<40} average exit {generator.average_exit():.2f} of {len(generator.exit_counts)} "
                  f"blocks (tokens exiting at blocks 1..N: {shares}), "
                  f"{generator.projections_per_token():.2f} vocabulary projections per token")
    first, second = totals.values()
    print(f"  time ratio {' / '.join(totals)} = {first['seconds'] / second['seconds']:.3f}")


def compare_exits(args: argparse.Namespace, full: Translator, sources: list[str]) -> None:
    gen_cfg = GenerationConfig(beam=args.beam, lenpen=args.lenpen)
    exit_cfg = dataclasses.replace(gen_cfg, exit_policy={"_name": "fixed_depth", "block": args.exit_after_block})
    exiting = Translator(full.task, full.model, exit_cfg, max_sentences=args.batch)
    truncated_model = copy.deepcopy(full.model)
    del truncated_model.decoder.layers[args.exit_after_block :]
    truncated = Translator(full.task, truncated_model, gen_cfg, max_sentences=args.batch)
    runs = {"full depth": full, f"exit after {args.exit_after_block}": exiting,
            f"{args.exit_after_block} blocks": truncated}
    totals = decode_alternately(runs, sources, args.rounds)
    seconds, tokens = {n: t["seconds"] for n, t in totals.items()}, {n: t["tokens"] for n, t in totals.items()}
    outputs = {n: t["outputs"] for n, t in totals.items()}
    # hypotheses of a shallower decoder differ in length, so the fair unit is time per target token
    per_token = {name: seconds[name] / tokens[name] for name in runs}
    print(f"early exits: {args.rounds} rounds of {len(sources)} sentences")
    for name in runs:
        print(f"  {name:<16} {seconds[name]:8.2f} s   {tokens[name] / seconds[name]:8.1f} target tokens/s")
    exit_name, trunc_name = list(runs)[1:]
    print(f"  time per token: exit / full depth = {per_token[exit_name] / per_token['full depth']:.3f}, "
          f"exit / {trunc_name} = {per_token[exit_name] / per_token[trunc_name]:.3f}")
    same = sum(a == b for a, b in zip(outputs[exit_name], outputs[trunc_name], strict=True))
    print(f"  exit and {trunc_name} agree on {same} of {len(sources)} hypotheses")


def compare_ct2(args: argparse.Namespace, translator: Translator, sources: list[str],
                references: list[str] | None, ours: list[str], meter: SpeedMeter) -> None:
    import ctranslate2

    from toolkit.export.ctranslate2 import detokenize, export_checkpoint, source_pieces

    task = translator.task
    pieces = source_pieces(task, sources)
    max_length = translator.model.max_positions()[1] - 1
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = export_checkpoint(args.checkpoint, f"{tmp}/model",
                                      plugin_options=parse_plugin_options(args.plugin_option))
        ct2 = ctranslate2.Translator(str(model_dir), device="cpu", inter_threads=1,
                                     intra_threads=torch.get_num_threads())

        def run(batch: list[list[str]]):
            return ct2.translate_batch(batch, beam_size=args.beam, max_batch_size=args.batch,
                                       length_penalty=args.lenpen, max_decoding_length=max_length)

        run(pieces[: args.batch])  # warm-up
        start = time.perf_counter()
        results = run(pieces)
        seconds = time.perf_counter() - start
    theirs = [detokenize(task, r.hypotheses[0]) for r in results]
    tokens = sum(len(r.hypotheses[0]) + 1 for r in results)  # + </s>, as ours counts it
    print(f"ctranslate2  translated {len(results)} sentences ({tokens} target tokens) in {seconds:.2f} s: "
          f"{len(results) / seconds:.1f} sentences/s, {tokens / seconds:.1f} tokens/s "
          f"(ctranslate2 {ctranslate2.__version__}, float32)")
    if references:
        print(f"ctranslate2  {score(theirs, references).lines()[0]}")
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    print(f"time ratio   toolkit / ctranslate2 = {meter.seconds / seconds:.2f}")
    print(f"identical    {same} of {len(ours)} hypotheses ({same / max(len(ours), 1):.1%})")


if __name__ == "__main__":
    main()
