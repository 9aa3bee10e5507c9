#!/usr/bin/env python
"""Prepare IWSLT'14 German-English the way fairseq's prepare-iwslt14.sh does, from local files.

    python examples/translation/prepare_iwslt14.py --orig PATH/de-en --out data/iwslt14-de-en

``--orig`` is the unpacked IWSLT 2014 release (``de-en.tgz``): ``train.tags.de-en.{de,en}`` and
the ``IWSLT14.TED*.xml`` dev/test sets. The steps, in fairseq's order:

- train: drop the ``<url>``/``<talkid>``/``<keywords>`` lines and the title/description tags,
  Moses-tokenize (sacremoses), remove pairs with an empty side, over 175 tokens, or a length
  ratio over 1.5, lowercase; every 23rd pair becomes ``valid``, the rest ``train``;
- test: the ``<seg>`` lines of dev2010, TEDX.dev2012, tst2010, tst2011 and tst2012, with ’
  turned into ', tokenized and lowercased, concatenated in that order (6,750 pairs).

The output is Moses-tokenized and lowercased, without BPE: train on it with
``task.tokenizer=sentencepiece`` (the toolkit learns subwords on it) or ``pretokenized``, and
score with tokenized BLEU (``toolkit-generate`` prints it), the IWSLT'14 convention.
Needs ``pip install sacremoses``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

LANGS = ("de", "en")
TEST_SETS = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010",
             "IWSLT14.TED.tst2011", "IWSLT14.TED.tst2012")
DROPPED = ("<url>", "<talkid>", "<keywords>")
TAGS = re.compile(r"</?(title|description)>")
SEGMENT = re.compile(r'<seg id="[0-9]*">\s*(.*?)\s*</seg>')


def tokenizers():
    try:
        from sacremoses import MosesTokenizer
    except ImportError:
        sys.exit("prepare_iwslt14.py needs sacremoses: pip install sacremoses")
    return {lang: MosesTokenizer(lang=lang) for lang in LANGS}


FINAL_PERIOD = re.compile(r"(?<=[^.\s])\.$")


def tokenize(moses, line: str) -> str:
    # Moses' perl tokenizer (which fairseq ran) splits a line-final period even after an
    # abbreviation ("u.s.a ."); sacremoses keeps it attached.
    return FINAL_PERIOD.sub(" .", moses.tokenize(line, return_str=True, escape=True))


def train_pairs(orig: Path, moses) -> list[tuple[str, str]]:
    sides = []
    for lang in LANGS:
        path = orig / f"train.tags.de-en.{lang}"
        if not path.is_file():
            sys.exit(f"{path} is missing: --orig must be the unpacked IWSLT 2014 de-en release")
        lines = [TAGS.sub("", line.rstrip("\n")) for line in path.open(encoding="utf-8")
                 if not any(tag in line for tag in DROPPED)]
        sides.append([tokenize(moses[lang], line) for line in lines])
    if len(sides[0]) != len(sides[1]):
        sys.exit(f"train.tags: {len(sides[0])} German but {len(sides[1])} English lines after filtering")
    return [(de.lower(), en.lower()) for de, en in zip(*sides) if _clean(de, en)]


def _clean(de: str, en: str, max_len: int = 175, ratio: float = 1.5) -> bool:
    """Moses clean-corpus-n.perl: 1..max_len tokens a side, length ratio at most ``ratio``."""
    a, b = len(de.split()), len(en.split())
    return 1 <= a <= max_len and 1 <= b <= max_len and a / b <= ratio and b / a <= ratio


def test_lines(orig: Path, lang: str, moses) -> list[str]:
    lines = []
    for name in TEST_SETS:
        path = orig / f"{name}.de-en.{lang}.xml"
        if not path.is_file():
            sys.exit(f"{path} is missing")
        for line in path.open(encoding="utf-8"):
            if "<seg id" in line:
                segment = SEGMENT.search(line).group(1).replace("’", "'")
                lines.append(tokenize(moses, segment).lower())
    return lines


def write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orig", type=Path, required=True, help="the unpacked de-en release folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--test-only", action="store_true", help="only the test split (no train.tags needed)")
    args = parser.parse_args(argv)
    moses = tokenizers()
    args.out.mkdir(parents=True, exist_ok=True)
    for lang in LANGS:
        write(args.out / f"test.{lang}", test_lines(args.orig, lang, moses[lang]))
    if not args.test_only:
        pairs = train_pairs(args.orig, moses)
        for i, lang in enumerate(LANGS):
            write(args.out / f"valid.{lang}", [p[i] for n, p in enumerate(pairs, 1) if n % 23 == 0])
            write(args.out / f"train.{lang}", [p[i] for n, p in enumerate(pairs, 1) if n % 23 != 0])
    print(f"wrote {', '.join(sorted(p.name for p in args.out.iterdir()))} to {args.out}")


if __name__ == "__main__":
    main()
