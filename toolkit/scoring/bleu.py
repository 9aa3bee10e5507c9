"""Corpus scores with sacreBLEU: detokenized BLEU (with its signature), tokenized BLEU, chrF."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import sacrebleu


@dataclass
class Scores:
    bleu: float
    bleu_signature: str
    chrf: float
    tokenized_bleu: float  # references and hypotheses compared as given (tokenize="none")

    def lines(self) -> list[str]:
        return [
            f"BLEU = {self.bleu:.2f}  ({self.bleu_signature})",
            f"tokenized BLEU = {self.tokenized_bleu:.2f}  (as given, no re-tokenization)",
            f"chrF = {self.chrf:.2f}",
        ]


def score(hypotheses: Sequence[str], references: Sequence[str]) -> Scores:
    """Score detokenized ``hypotheses`` against one reference each."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu = sacrebleu.metrics.BLEU()
    detok = bleu.corpus_score(list(hypotheses), [list(references)])
    tokenized = sacrebleu.metrics.BLEU(tokenize="none").corpus_score(list(hypotheses), [list(references)])
    chrf = sacrebleu.metrics.CHRF().corpus_score(list(hypotheses), [list(references)])
    return Scores(detok.score, str(bleu.get_signature()), chrf.score, tokenized.score)
