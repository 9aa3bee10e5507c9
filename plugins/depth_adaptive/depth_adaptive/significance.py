"""How sure is a tuned setting to be within the allowed BLEU drop? A paired bootstrap (Koehn,
2004) over the tuning sentences: the same resampled sets score the setting and full depth.

sacreBLEU's corpus BLEU is a function of sentence statistics summed over the corpus (matches and
totals per n-gram order, hypothesis and reference lengths), so a resample is scored from the
sum of its sentences' rows, as sacreBLEU's own ``--paired-bs`` does.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sacrebleu.metrics import BLEU

METRIC = BLEU()  # sacreBLEU's defaults (13a tokenization), as toolkit.scoring.bleu.score


def sentence_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """(S, 2 + 2 * 4) sacreBLEU's statistics of each sentence (default 13a tokenization)."""
    return np.asarray(METRIC._extract_corpus_statistics(list(hypotheses), [list(references)]), dtype=np.int64)


def corpus_bleu(statistics: np.ndarray) -> float:
    """BLEU of the sentences whose statistics (rows) are summed in ``statistics`` (2 + 2 * 4,)."""
    return METRIC._compute_score_from_stats(statistics.tolist()).score


def chance_within(setting: np.ndarray, full: np.ndarray, max_drop: float, resamples: int = 1000,
                  seed: int = 12345) -> float:
    """The fraction of paired resamples of the sentences in which the setting's BLEU is at most
    ``max_drop`` below full depth's; ``setting`` and ``full`` (S, 10) from ``sentence_statistics``."""
    if setting.shape != full.shape:
        raise ValueError(f"statistics of {setting.shape[0]} and {full.shape[0]} sentences")
    sentences = len(full)
    draws = np.random.default_rng(seed).integers(0, sentences, size=(resamples, sentences))  # (R, S)
    weights = np.stack([np.bincount(draw, minlength=sentences) for draw in draws])  # (R, S) times drawn
    setting_sums, full_sums = weights @ setting, weights @ full  # (R, 10) each
    within = sum(corpus_bleu(a) >= corpus_bleu(b) - max_drop for a, b in zip(setting_sums, full_sums))
    return within / resamples
