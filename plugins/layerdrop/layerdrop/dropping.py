"""Which blocks a training forward skips: the same on every rank, from the seed and the update."""

from __future__ import annotations

from typing import Sequence

import torch

from layerdrop.pruning import spread


def seeded(*parts: int) -> torch.Generator:
    """A generator seeded by ``parts`` (the same numbers give the same draws on every rank)."""
    key = 0
    for part in parts:
        key = (key * 1_000_003 + part) % 2**63
    return torch.Generator().manual_seed(key)


class BlockDropper:
    """A stack's ``skip_blocks`` (``toolkit.models.transformer.skipped_blocks``): each block is
    skipped with probability ``rate``, drawn from a generator seeded by (seed, side, update).

    Every rank of a data-parallel run, and every accumulated batch of one update, skips the
    same blocks, so DDP and FSDP stay in step and two processes train as one process with
    ``update_freq=2``; a resumed run skips what the uninterrupted one would have. Before update
    ``start`` nothing is skipped.

    Sub-network updates ("aligned" LayerDrop): with probability ``subnet_rate`` an update trains
    only the blocks that every-other pruning (``spread``) keeps at a depth drawn from
    ``subnet_depths``. That draw is seeded by (seed, update) without the side, so the encoder
    and the decoder train the same depth's sub-network in the same update.
    """

    def __init__(self, num_blocks: int, rate: float, seed: int, side: int, start: int = 0,
                 subnet_rate: float = 0.0, subnet_depths: Sequence[int] = ()):
        self.num_blocks, self.rate, self.seed, self.side, self.start = num_blocks, rate, seed, side, start
        self.subnet_rate, self.subnet_depths = subnet_rate, list(subnet_depths)
        self.update = 0

    def __call__(self) -> frozenset[int]:
        if self.update < self.start:
            return frozenset()
        if self.subnet_rate > 0:
            draws = torch.rand(2, generator=seeded(self.seed, self.update))  # (subnet or not, which depth)
            if draws[0] < self.subnet_rate:
                depth = self.subnet_depths[int(draws[1] * len(self.subnet_depths))]
                return frozenset(range(self.num_blocks)) - frozenset(spread(self.num_blocks, depth))
        draws = torch.rand(self.num_blocks, generator=seeded(self.seed, self.side, self.update))  # (N,)
        return frozenset(torch.nonzero(draws < self.rate).flatten().tolist())
