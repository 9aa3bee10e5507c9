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

from toolkit.data.preprocess import read_lines
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.report import SpeedMeter
from toolkit.generation.translator import Translator
from toolkit.scoring.bleu import score


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--reference")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--lenpen", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=64, help="sentences per batch")
    parser.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compare-ct2", action="store_true", help="also decode with CTranslate2 and compare")
    parser.add_argument("--exit-after-block", type=int, metavar="N",
                        help="compare full depth, every hypothesis exiting after block N, and N blocks")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds for --exit-after-block")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sources = read_lines(args.source)[: args.limit]
    references = read_lines(args.reference)[: args.limit] if args.reference else None
    translator = Translator.from_checkpoint(args.checkpoint, GenerationConfig(beam=args.beam, lenpen=args.lenpen),
                                            device=args.device, max_sentences=args.batch)
    translator.translate(sources[: args.batch])  # warm-up
    meter = SpeedMeter(translator.device)
    with meter:
        translations = translator.translate(sources)
    meter.add(translations)
    ours = [t.text for t in translations]
    print(f"beam {args.beam}, batch {args.batch} sentences, {torch.get_num_threads()} threads, {translator.device}")
    print(f"toolkit      {meter.summary()}")
    if references:
        print(f"toolkit      {score(ours, references).lines()[0]}")
    if args.compare_ct2:
        compare_ct2(args, translator, sources, references, ours, meter)
    if args.exit_after_block:
        compare_exits(args, translator, sources)


def compare_exits(args: argparse.Namespace, full: Translator, sources: list[str]) -> None:
    gen_cfg = GenerationConfig(beam=args.beam, lenpen=args.lenpen)
    exit_cfg = dataclasses.replace(gen_cfg, exit_policy={"_name": "fixed_depth", "block": args.exit_after_block})
    exiting = Translator(full.task, full.model, exit_cfg, max_sentences=args.batch)
    truncated_model = copy.deepcopy(full.model)
    del truncated_model.decoder.layers[args.exit_after_block :]
    truncated = Translator(full.task, truncated_model, gen_cfg, max_sentences=args.batch)
    runs = {"full depth": full, f"exit after {args.exit_after_block}": exiting,
            f"{args.exit_after_block} blocks": truncated}
    seconds, tokens, outputs = {name: 0.0 for name in runs}, {name: 0 for name in runs}, {}
    for name, translator in runs.items():
        translator.translate(sources[: args.batch])  # warm-up
    for _ in range(args.rounds):
        for name, translator in runs.items():
            meter = SpeedMeter(translator.device)
            with meter:
                translations = translator.translate(sources)
            meter.add(translations)
            outputs[name] = [t.text for t in translations]
            seconds[name] += meter.seconds
            tokens[name] += meter.tokens
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
        model_dir = export_checkpoint(args.checkpoint, f"{tmp}/model")
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
