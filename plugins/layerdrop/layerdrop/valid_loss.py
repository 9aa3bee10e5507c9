"""Teacher-forced loss of a model on parallel text: the measure greedy pruning minimises."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def make_batches(task, sources: Sequence[str], targets: Sequence[str], max_positions: tuple[int, int],
                 max_sentences: int = 64) -> list[dict]:
    """Tokenize the pairs with the checkpoint's tokenizers and pad them into batches; pairs
    with an empty side are left out, longer ones cut to the model's positions."""
    src_ids = task.src_tokenizer.encode([line.strip() for line in sources])
    tgt_ids = task.tgt_tokenizer.encode([line.strip() for line in targets])
    d = task.tgt_dict
    max_src, max_tgt = (positions - 1 for positions in max_positions)  # room for </s> or <s>
    pairs = [(s[:max_src], t[:max_tgt]) for s, t in zip(src_ids, tgt_ids, strict=True) if s and t]
    batches = []
    for start in range(0, len(pairs), max_sentences):
        chunk = pairs[start : start + max_sentences]
        src = _pad([s + [d.eos] for s, _ in chunk], d.pad)  # (B, S)
        prev = _pad([[d.bos] + t for _, t in chunk], d.pad)  # (B, T)
        target = _pad([t + [d.eos] for _, t in chunk], d.pad)  # (B, T)
        batches.append({"src_tokens": src, "src_lengths": src.ne(d.pad).sum(1), "prev_output_tokens": prev,
                        "target": target})
    return batches


def _pad(rows: list[list[int]], pad: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


@torch.no_grad()
def token_nll(model: nn.Module, batches: list[dict], pad: int) -> float:
    """Mean negative log-likelihood per target token (nats), the model in eval mode."""
    total, count = 0.0, 0
    for batch in batches:
        logits = model(batch["src_tokens"], batch["src_lengths"], batch["prev_output_tokens"]).logits  # (B, T, V)
        target = batch["target"]
        total += F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=pad,
                                 reduction="sum").item()
        count += int(target.ne(pad).sum())
    return total / max(count, 1)
