"""Typed, reorderable decoding state: each decoder block's cached keys and values."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    """One attention's keys and values, (B, H, L, hd) each; empty until the first step."""

    key: torch.Tensor | None = None
    value: torch.Tensor | None = None

    def append(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's keys/values (B, H, t, hd); return everything cached so far."""
        if self.key is not None:
            key, value = torch.cat([self.key, key], dim=2), torch.cat([self.value, value], dim=2)
        self.key, self.value = key, value
        return key, value

    def select(self, rows: torch.Tensor) -> None:
        if self.key is not None:
            self.key, self.value = self.key.index_select(0, rows), self.value.index_select(0, rows)


class IncrementalState:
    """Caches of every decoder block for one batch of hypotheses.

    Self-attention caches grow by one position per step. Cross-attention keys/values are
    computed from the encoder output once, at the first step. ``reorder`` follows hypotheses
    that move between beam slots; ``select_sentences`` shrinks the batch when sentences finish.
    """

    def __init__(self, num_layers: int):
        self.self_attn = [KVCache() for _ in range(num_layers)]
        self.cross_attn = [KVCache() for _ in range(num_layers)]
        self.length = 0  # target positions decoded so far

    def reorder(self, new_order: torch.Tensor) -> None:
        """Row i of every self-attention cache becomes old row ``new_order[i]``.

        Cross-attention caches stay: beams of one sentence share its encoder keys/values, so
        a reorder within sentences changes nothing there.
        """
        for cache in self.self_attn:
            cache.select(new_order)

    def select_sentences(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` of the cross-attention caches, when finished sentences leave the
        batch; ``reorder`` does the self-attention caches in the same step."""
        for cache in self.cross_attn:
            cache.select(rows)
