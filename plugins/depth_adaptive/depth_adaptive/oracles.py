"""Oracle exit blocks q* = delta(n*) that the halting classifiers learn (Elbayad et al. §3.2).

From per-token scores ``score[b, t, n]`` of block n = 1..N (log-likelihood LL_t^n of the gold
token, or correctness C_t^n = [argmax_t^n = y_t]):

- per sequence: n* = argmax_n (sum_t score_t^n - lambda n);
- per token: n*_t = argmax_n (sum_t' kappa(t, t') score_t'^n - lambda n), with
  kappa(t, t') = exp(-|t - t'|^2 / sigma) over the sentence's real tokens (sigma -> 0: no smoothing).

Ties go to the shallowest block. Blocks are 1-based in the docs, 0-based in the tensors.
"""

from __future__ import annotations

import torch

from toolkit.errors import ConfigError

ORACLES = ("likelihood", "correctness")


def token_scores(block_lprobs: torch.Tensor, target: torch.Tensor, oracle: str) -> torch.Tensor:
    """(B, T, N) per-token scores from each block's log-probabilities (B, T, N, V) or, to save
    memory, from a list of N (B, T, V) tensors."""
    if oracle not in ORACLES:
        raise ConfigError(f"criterion.oracle must be one of {ORACLES}, got {oracle!r}")
    blocks = list(block_lprobs.unbind(2)) if isinstance(block_lprobs, torch.Tensor) else block_lprobs
    if oracle == "likelihood":
        scores = [lp.gather(-1, target.unsqueeze(-1)).squeeze(-1) for lp in blocks]
    else:
        scores = [lp.argmax(-1).eq(target).float() for lp in blocks]
    return torch.stack(scores, dim=-1)


def smooth_over_time(scores: torch.Tensor, keep: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, T, N): sum_t' kappa(t, t') scores[t'] over real tokens t' (``keep`` (B, T) bool)."""
    if sigma <= 0:
        return scores
    positions = torch.arange(scores.size(1), device=scores.device, dtype=scores.dtype)
    kernel = torch.exp(-(positions[:, None] - positions[None, :]) ** 2 / sigma)  # (T, T)
    masked = scores * keep.unsqueeze(-1).to(scores.dtype)
    return torch.einsum("st,btn->bsn", kernel, masked)


def depth_penalty(blocks: int, lam: float, like: torch.Tensor) -> torch.Tensor:
    """(N,) lambda * n for n = 1..N."""
    return lam * torch.arange(1, blocks + 1, device=like.device, dtype=like.dtype)


def sequence_oracle(scores: torch.Tensor, keep: torch.Tensor, lam: float) -> torch.Tensor:
    """(B,) 0-based n* per sentence from token scores (B, T, N)."""
    totals = (scores * keep.unsqueeze(-1).to(scores.dtype)).sum(1)  # (B, N)
    return (totals - depth_penalty(scores.size(-1), lam, totals)).argmax(-1)


def token_oracle(scores: torch.Tensor, keep: torch.Tensor, lam: float, sigma: float) -> torch.Tensor:
    """(B, T) 0-based n*_t from token scores (B, T, N), smoothed over time with sigma."""
    smoothed = smooth_over_time(scores, keep, sigma)
    return (smoothed - depth_penalty(scores.size(-1), lam, smoothed)).argmax(-1)
