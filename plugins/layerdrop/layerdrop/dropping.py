"""Which blocks a training forward skips: the same on every rank, from the seed and the update."""

from __future__ import annotations

import torch


class BlockDropper:
    """A stack's ``skip_blocks`` (``toolkit.models.transformer.skipped_blocks``): each block is
    skipped with probability ``rate``, drawn from a generator seeded by (seed, side, update).

    Every rank of a data-parallel run, and every accumulated batch of one update, skips the
    same blocks, so DDP and FSDP stay in step and two processes train as one process with
    ``update_freq=2``; a resumed run skips what the uninterrupted one would have. Before update
    ``start`` nothing is skipped.
    """

    def __init__(self, num_blocks: int, rate: float, seed: int, side: int, start: int = 0):
        self.num_blocks, self.rate, self.seed, self.side, self.start = num_blocks, rate, seed, side, start
        self.update = 0

    def __call__(self) -> frozenset[int]:
        if self.update < self.start:
            return frozenset()
        key = 0
        for part in (self.seed, self.side, self.update):
            key = (key * 1_000_003 + part) % 2**63
        draws = torch.rand(self.num_blocks, generator=torch.Generator().manual_seed(key))  # (N,)
        return frozenset(torch.nonzero(draws < self.rate).flatten().tolist())
