"""Typed, reorderable decoding state: each decoder block's cached keys and values."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    """One attention's keys and values, (B, H, L, hd) each; empty until the first step.

    A self-attention cache is reordered lazily: ``defer_select`` only records the rows, and the
    next ``append`` gathers them straight into the grown tensor: one copy of the cache per
    decoding step instead of two (``index_select`` then ``cat``). Its effect on a whole beam step
    is measured by ``scripts/profile_exit_step.py`` (see ``docs/DESIGN.md``).
    """

    key: torch.Tensor | None = None
    value: torch.Tensor | None = None
    pending_rows: torch.Tensor | None = None  # rows to take before the next append
    # queries per cached row: a cross-attention cache keeps one row per source sentence, which
    # the ``group`` consecutive hypotheses of its beam share (see ``IncrementalState``)
    group: int = 1

    def append(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's keys/values (B, H, t, hd); return everything cached so far."""
        if self.key is not None:
            key, value = _extend(self.key, self.pending_rows, key), _extend(self.value, self.pending_rows, value)
        self.key, self.value, self.pending_rows = key, value, None
        return key, value

    def select(self, rows: torch.Tensor) -> None:
        """Keep ``rows`` (in that order) now."""
        if self.key is not None:
            self.defer_select(rows)
            self.key, self.value = self.key.index_select(0, self.pending_rows), self.value.index_select(0, self.pending_rows)
            self.pending_rows = None

    def defer_select(self, rows: torch.Tensor) -> None:
        """Keep ``rows`` from the next ``append`` on (selections compose)."""
        if self.key is not None:
            self.pending_rows = rows if self.pending_rows is None else self.pending_rows.index_select(0, rows)


def _extend(cached: torch.Tensor, rows: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    """``cat([cached[rows], new], dim=2)`` with one copy of ``cached``: (B, H, L, hd) -> (B', H, L+t, hd)."""
    if rows is None or torch.is_grad_enabled():  # out= does not record gradients
        return torch.cat([cached if rows is None else cached.index_select(0, rows), new], dim=2)
    length = cached.size(2)
    out = new.new_empty(new.size(0), new.size(1), length + new.size(2), new.size(3))
    torch.index_select(cached, 0, rows, out=out[:, :, :length])
    out[:, :, length:] = new
    return out


class IncrementalState:
    """Caches of every decoder block for one batch of hypotheses.

    Self-attention caches grow by one position per step. Cross-attention keys/values are
    computed from the encoder output once, at the first step. ``reorder`` follows hypotheses
    that move between beam slots; ``select_sentences`` shrinks the batch when sentences finish.

    ``rows_per_source``: how many consecutive hypotheses (rows) decode each row of the encoder
    output, a sentence's beam. The encoder output then stays one row per sentence, and each
    cross-attention reads its sentence's keys and values once for the whole beam (the beam's
    queries are folded into one attention), instead of a copy per beam slot: the keys and
    values are projected and cached for B rows, not B*K.

    Other per-hypothesis memory rides along in ``hypotheses``: tensors whose first dimension is
    the batch's rows (an exit policy's plan or history, see ``generation/exit_policy.py``);
    ``reorder`` gathers them with the self-attention caches, so whoever keeps state there never
    sees a beam move or a sentence leave.
    """

    def __init__(self, num_layers: int, rows_per_source: int = 1):
        if rows_per_source < 1:
            raise ValueError(f"rows_per_source must be >= 1, got {rows_per_source}")
        self.rows_per_source = rows_per_source
        self.self_attn = [KVCache() for _ in range(num_layers)]
        self.cross_attn = [KVCache(group=rows_per_source) for _ in range(num_layers)]
        self.length = 0  # target positions decoded so far
        self.hypotheses: dict[str, torch.Tensor] = {}  # name -> (N, ...), follows reorder

    def reorder(self, new_order: torch.Tensor) -> None:
        """Row i of every self-attention cache (and of ``hypotheses``) becomes old row
        ``new_order[i]``; ``new_order`` indexes the batch before any ``select_sentences`` of the
        same step, so it also drops the rows of sentences that left.

        Cross-attention caches stay: beams of one sentence share its encoder keys/values, so
        a reorder within sentences changes nothing there.
        """
        for cache in self.self_attn:
            cache.defer_select(new_order)  # gathered by the next step's append
        for name, rows in self.hypotheses.items():
            self.hypotheses[name] = rows.index_select(0, new_order)

    def select_sentences(self, rows: torch.Tensor) -> None:
        """Keep only the sentences of ``rows`` (hypothesis rows, whole beams in order) in the
        cross-attention caches, when finished sentences leave the batch; ``reorder`` does the
        self-attention caches in the same step."""
        group = self.rows_per_source
        sources = rows if group == 1 else rows[::group] // group  # (B',) the sentences kept
        for cache in self.cross_attn:
            cache.select(sources)
