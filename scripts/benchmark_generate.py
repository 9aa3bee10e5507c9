#!/usr/bin/env python
"""Decoding speed of a checkpoint without I/O: sentences/s, target tokens/s, peak memory.

    python scripts/benchmark_generate.py --checkpoint RUN/checkpoint_best.pt \
        --source ../shared/data/multi30k-task1/test.de --reference ../shared/data/multi30k-task1/test.en \
        --beam 5 --batch 64 --threads 2

The source text is read and tokenized before timing; a warm-up pass on the first batch is not
timed. With --reference it also prints sacreBLEU, so speed and quality come from one run.
"""

from __future__ import annotations

import argparse

import torch

from toolkit.data.preprocess import read_lines
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.report import SpeedMeter
from toolkit.generation.translator import Translator
from toolkit.scoring.bleu import score


def main() -> None:
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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sources = read_lines(args.source)[: args.limit]
    translator = Translator.from_checkpoint(args.checkpoint, GenerationConfig(beam=args.beam, lenpen=args.lenpen),
                                            device=args.device, max_sentences=args.batch)
    translator.translate(sources[: args.batch])  # warm-up
    meter = SpeedMeter(translator.device)
    with meter:
        translations = translator.translate(sources)
    meter.add(translations)
    print(f"beam {args.beam}, batch {args.batch} sentences, {torch.get_num_threads()} threads, {translator.device}")
    print(meter.summary())
    if args.reference:
        references = read_lines(args.reference)[: args.limit]
        print(score([t.text for t in translations], references).lines()[0])


if __name__ == "__main__":
    main()
