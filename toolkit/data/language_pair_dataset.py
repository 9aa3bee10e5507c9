"""Source/target pairs from binarized splits, filtered and collated into padded batches."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from toolkit.data.dictionary import Dictionary
from toolkit.data.indexed_dataset import IndexedDataset

logger = logging.getLogger(__name__)


class LanguagePairDataset:
    """Pairs ``(source ids, target ids)``; ``indices`` are the pairs kept after filtering.

    Empty sides and pairs longer than ``max_positions`` tokens (end of sentence included) are
    skipped and counted in the log. Sizes count the end-of-sentence token each side gets.
    """

    def __init__(self, src: IndexedDataset, tgt: IndexedDataset, src_dict: Dictionary,
                 tgt_dict: Dictionary, max_positions: int | None = None, name: str = ""):
        if len(src) != len(tgt):
            raise ValueError(f"{name}: {len(src)} source but {len(tgt)} target sequences")
        self.src, self.tgt = src, tgt
        self.src_dict, self.tgt_dict = src_dict, tgt_dict
        self.src_sizes = src.sizes + 1  # (N,) with </s>
        self.tgt_sizes = tgt.sizes + 1
        keep = (src.sizes > 0) & (tgt.sizes > 0)
        empty = int((~keep).sum())
        too_long = 0
        if max_positions is not None:
            long = keep & ((self.src_sizes > max_positions) | (self.tgt_sizes > max_positions))
            too_long = int(long.sum())
            keep &= ~long
        if empty or too_long:
            logger.warning("%s: skipped %d pairs with an empty side and %d longer than %s tokens",
                           name, empty, too_long, max_positions)
        self.indices = np.flatnonzero(keep)  # (N_kept,)
        self.skipped = {"empty": empty, "too_long": too_long}

    def __len__(self) -> int:
        return len(self.indices)

    def num_tokens(self, index: int) -> int:
        return int(max(self.src_sizes[index], self.tgt_sizes[index]))

    def collate(self, indices: Sequence[int]) -> dict[str, Any]:
        """Pad a batch to its longest side (right padding).

        Returns ``net_input`` with ``src_tokens`` (B, S) ending in </s>, ``src_lengths`` (B,),
        ``prev_output_tokens`` (B, T) starting with <s>; ``target`` (B, T) ending in </s>.
        """
        pad, bos, eos = self.tgt_dict.pad, self.tgt_dict.bos, self.tgt_dict.eos
        sources = [self.src[i] for i in indices]
        targets = [self.tgt[i] for i in indices]
        batch, src_len = len(indices), max(len(s) for s in sources) + 1
        tgt_len = max(len(t) for t in targets) + 1
        src_tokens = np.full((batch, src_len), pad, dtype=np.int64)
        prev_output = np.full((batch, tgt_len), pad, dtype=np.int64)
        target = np.full((batch, tgt_len), pad, dtype=np.int64)
        for row, (s, t) in enumerate(zip(sources, targets)):
            src_tokens[row, : len(s)] = s
            src_tokens[row, len(s)] = eos
            prev_output[row, 0] = bos
            prev_output[row, 1 : len(t) + 1] = t
            target[row, : len(t)] = t
            target[row, len(t)] = eos
        ntokens = sum(len(t) + 1 for t in targets)
        return {
            "id": torch.as_tensor(np.asarray(indices, dtype=np.int64)),
            "net_input": {
                "src_tokens": torch.from_numpy(src_tokens),
                "src_lengths": torch.tensor([len(s) + 1 for s in sources]),
                "prev_output_tokens": torch.from_numpy(prev_output),
            },
            "target": torch.from_numpy(target),
            "ntokens": ntokens,
            "nsentences": batch,
        }
