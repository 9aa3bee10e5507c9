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

    def append_rows(self, key: torch.Tensor, value: torch.Tensor, step: "BlockRows") -> tuple[torch.Tensor, torch.Tensor]:
        """Early-exit decoding: grow every row's cache to ``step.position + 1`` positions with
        the keys/values (R, H, 1, hd) of ``step.rows`` at the newest position; every other new
        entry (the exited rows', and positions of steps no row ran this block) is zero until
        ``write`` fills it. Returns everything cached so far, (N, H, L, hd)."""
        length = 0 if self.key is None else self.key.size(2)
        if step.every_row and length == step.position:
            return self.append(key, value)
        new = step.position + 1 - length
        grown_key = key.new_zeros(step.batch, key.size(1), new, key.size(3))  # (N, H, new, hd)
        grown_value = torch.zeros_like(grown_key)
        grown_key[step.rows, :, new - 1] = key[:, :, 0]
        grown_value[step.rows, :, new - 1] = value[:, :, 0]
        return self.append(grown_key, grown_value)

    def write(self, rows: torch.Tensor, positions: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        """Set the keys/values (M, H, hd) of (row, position) pairs ``rows`` (M,), ``positions`` (M,)."""
        self.key[rows, :, positions] = key
        self.value[rows, :, positions] = value


@dataclass
class DeferredKeys:
    """Positions of the running rows whose keys/values a block still owes: their hypothesis had
    exited below this block there, and a later position now runs it."""

    rows: torch.Tensor  # (M,) batch rows
    positions: torch.Tensor  # (M,) their earlier positions
    states: torch.Tensor  # (M, C) the states those positions exited with (copied upward)


@dataclass
class BlockRows:
    """Which rows run one decoder block in an early-exit decoding step, and what it owes them."""

    rows: torch.Tensor  # (R,) the rows still running, in the order their outputs come back
    batch: int  # N, every row of the step
    position: int  # the step's 0-based target position
    deferred: DeferredKeys | None = None

    @property
    def every_row(self) -> bool:
        return self.rows.numel() == self.batch


class CopiedStates:
    """Early-exit decoding: what each decoded position left the decoder with, and how many
    blocks' self-attention caches hold its keys/values.

    A hypothesis that exits after block e is copied to the blocks above, which must attend to
    it at later positions. Their keys/values of it are computed only when a later position of
    the same hypothesis runs that block (``BlockRows.deferred``, one product for all owed
    positions), and never for a block that no later position reaches. Since a position that runs
    block b has run every block below it in the same step, the blocks holding a position are
    always a prefix: ``depth`` counts them.
    """

    def __init__(self):
        self.states: torch.Tensor | None = None  # (N0, T, C) stored rows; ``rows`` maps onto them
        self.rows: torch.Tensor | None = None  # (N,) row i is stored row rows[i]; None: the same
        self.depth: torch.Tensor | None = None  # (N, T) uint8 blocks cached per position

    def owed(self, block: int, rows: torch.Tensor) -> DeferredKeys | None:
        """The positions of ``rows`` (R,) whose keys/values ``block`` (0-based) has not computed;
        they count as computed from now on."""
        if self.depth is None or block == 0:
            return None
        where = (self.depth.index_select(0, rows) == block).nonzero()  # (M, 2): index into rows, position
        if where.numel() == 0:
            return None
        owed_rows, positions = rows.index_select(0, where[:, 0]), where[:, 1]
        self.depth[owed_rows, positions] = block + 1
        stored = owed_rows if self.rows is None else self.rows.index_select(0, owed_rows)
        return DeferredKeys(owed_rows, positions, self.states[stored, positions])

    def record(self, states: torch.Tensor, exit_block: torch.Tensor) -> None:
        """Add the step's position: each row's state (N, C) and its exit block (N,), 1-based."""
        depth = exit_block.to(torch.uint8)[:, None]  # (N, 1)
        if self.depth is None:
            self.states, self.depth = states[:, None], depth
        else:
            self.states = _extend(self.states[:, None], self.rows, states[:, None, None])[:, 0]
            self.depth = torch.cat([self.depth, depth], dim=1)
        self.rows = None

    def reorder(self, new_order: torch.Tensor) -> None:
        """Row i becomes old row ``new_order[i]`` (the states are gathered by the next ``record``)."""
        if self.depth is not None:
            self.depth = self.depth.index_select(0, new_order)
            self.rows = new_order if self.rows is None else self.rows.index_select(0, new_order)


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
    sees a beam move or a sentence leave. ``copied`` (early exits) keeps the exited positions'
    states for the blocks above, which compute their keys/values when first needed.
    """

    def __init__(self, num_layers: int, rows_per_source: int = 1):
        if rows_per_source < 1:
            raise ValueError(f"rows_per_source must be >= 1, got {rows_per_source}")
        self.rows_per_source = rows_per_source
        self.self_attn = [KVCache() for _ in range(num_layers)]
        self.cross_attn = [KVCache(group=rows_per_source) for _ in range(num_layers)]
        self.length = 0  # target positions decoded so far
        self.copied = CopiedStates()  # early exits: exited positions' states, keys/values owed
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
        self.copied.reorder(new_order)
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
