"""Search strategies: one small step function each, separate from the decoding loop.

A step gets the log-probabilities of every live hypothesis and returns ``2 * beam``
candidates per sentence, best first: the loop finalizes candidates that end in </s> among the
first ``beam`` and continues with the first ``beam`` that do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from toolkit.errors import ConfigError


class Search:
    """``step(step, lprobs, scores) -> (cand_scores, cand_tokens, cand_beams)``, each (B, 2K).

    :param lprobs: (B, K, V) next-token log-probabilities of K hypotheses per sentence.
    :param scores: (B, K) cumulative log-probabilities of those hypotheses.
    """

    def __init__(self, cfg):
        self.cfg = cfg

    def step(self, step: int, lprobs: torch.Tensor, scores: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


@dataclass
class BeamSearchConfig:
    _name: str = "beam"


class BeamSearch(Search):
    """The 2K best continuations of all K hypotheses of a sentence by cumulative score."""

    def step(self, step, lprobs, scores):
        beam = lprobs.size(1)
        if step == 0:  # every hypothesis is the same <s>: expand only the first
            lprobs = lprobs[:, :1]
        return best_continuations(lprobs, scores[:, : lprobs.size(1)], 2 * beam)


CHUNK = 64  # vocabulary entries per chunk of best_continuations' first pass


def best_continuations(lprobs: torch.Tensor, scores: torch.Tensor, count: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``count`` best (score + log-probability) continuations of each sentence's hypotheses.

    lprobs: (B, K, V), scores: (B, K) -> cand_scores, cand_tokens, cand_beams, each (B, count).
    A top-k over all K*V sums reads and sorts ~K*V values per sentence at every step; instead
    each hypothesis's vocabulary is cut into chunks of ``CHUNK`` entries, the ``count`` chunks
    with the best maxima are chosen (every one of the ``count`` best continuations lies in one:
    a chunk holding one has a maximum at least as good, and at most ``count`` chunks can), and
    the top-k runs over their entries only. Equal to the full top-k up to the order of ties.
    """
    batch, beam, vocab = lprobs.shape
    chunks = -(-vocab // CHUNK)
    if beam * chunks <= 2 * count:  # a small vocabulary: too few chunks to leave any out
        return all_continuations_topk(lprobs, scores, count)
    if chunks * CHUNK != vocab:
        lprobs = torch.nn.functional.pad(lprobs, (0, chunks * CHUNK - vocab), value=float("-inf"))
    blocks = lprobs.view(batch, beam * chunks, CHUNK)  # (B, K*chunks, CHUNK)
    maxima = blocks.amax(-1) + scores.repeat_interleave(chunks, dim=1)  # (B, K*chunks)
    best_blocks = maxima.topk(count, dim=1).indices  # (B, count)
    entries = blocks.gather(1, best_blocks[:, :, None].expand(-1, -1, CHUNK))  # (B, count, CHUNK)
    entries = entries + scores.gather(1, best_blocks // chunks)[:, :, None]
    cand_scores, flat = entries.view(batch, -1).topk(count, dim=1)  # (B, count) into count*CHUNK
    block = best_blocks.gather(1, flat // CHUNK)  # (B, count) into K*chunks
    return cand_scores, (block % chunks) * CHUNK + flat % CHUNK, block // chunks


def all_continuations_topk(lprobs: torch.Tensor, scores: torch.Tensor, count: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``best_continuations`` by one top-k over all K*V sums (fairseq's way; the reference the
    chunked search is equal to, and its path for small vocabularies)."""
    batch, _, vocab = lprobs.shape
    total = (lprobs + scores[:, :, None]).view(batch, -1)  # (B, K*V)
    cand_scores, flat = total.topk(min(count, total.size(1)), dim=1)
    return cand_scores, flat % vocab, flat // vocab


@dataclass
class SamplingConfig:
    _name: str = "sampling"
    topk: int = 0  # sample among the k most likely tokens (0: all)
    topp: float = 1.0  # ... or the smallest set holding this much probability
    temperature: float = 1.0
    seed: Optional[int] = None


class Sampling(Search):
    """Each hypothesis samples two distinct next tokens (top-k / nucleus, with temperature)."""

    def __init__(self, cfg: SamplingConfig):
        super().__init__(cfg)
        if cfg.temperature <= 0 or not 0 < cfg.topp <= 1 or cfg.topk < 0:
            raise ConfigError("sampling needs temperature > 0, 0 < topp <= 1 and topk >= 0")
        self.generator = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None

    def step(self, step, lprobs, scores):
        batch, beam, vocab = lprobs.shape
        logits = lprobs / self.cfg.temperature
        if self.cfg.topk:
            kth = logits.topk(min(self.cfg.topk, vocab), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.cfg.topp < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            before = sorted_logits.softmax(-1).cumsum(-1) - sorted_logits.softmax(-1)
            sorted_logits = sorted_logits.masked_fill(before >= self.cfg.topp, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
        probs = logits.softmax(-1).view(-1, vocab).cpu()
        # two distinct draws need two possible tokens: a row with one (top-k 1, forced </s>) gets
        # a negligible weight on the others for its second draw, used only if the first ends
        allowed = (probs > 0).sum(-1, keepdim=True)
        draws = torch.multinomial(probs + (allowed < 2) * 1e-12, 2, replacement=False, generator=self.generator)
        tokens = draws.to(lprobs.device).view(batch, beam, 2)  # (B, K, 2)
        token_scores = lprobs.gather(-1, tokens) + scores[:, :, None]
        # first draws of every hypothesis, then second draws: the loop prefers the first
        cand_tokens = tokens.transpose(1, 2).reshape(batch, 2 * beam)
        cand_scores = token_scores.transpose(1, 2).reshape(batch, 2 * beam)
        cand_beams = torch.arange(beam, device=lprobs.device).repeat(2).expand(batch, -1)
        return cand_scores, cand_tokens, cand_beams
