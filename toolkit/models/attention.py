"""Multi-head attention on ``torch.nn.functional.scaled_dot_product_attention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.models.incremental_state import BlockRows, KVCache


class MultiheadAttention(nn.Module):
    """Self-attention with one fused QKV projection, or cross-attention with a fused KV one.

    :param dim: query (and output) width.
    :param heads: number of heads; ``dim`` must divide by it.
    :param kv_dim: key/value input width for cross-attention (``None``: self-attention).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, kv_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} does not divide into {heads} heads")
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.self_attention = kv_dim is None
        if self.self_attention:
            self.qkv_proj = nn.Linear(dim, 3 * dim)
        else:
            self.q_proj = nn.Linear(dim, dim)
            self.kv_proj = nn.Linear(kv_dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def _split_heads(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        batch, length, _ = x.shape
        x = x.view(batch, length, parts, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return x.unbind(0)  # parts x (B, H, L, hd)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None, causal: bool = False,
                cache: KVCache | None = None) -> torch.Tensor:
        """Attend from ``query`` (B, T, C) to ``key_value`` (B, S, C_kv), or to itself.

        :param key_padding_mask: (B, S) True where the key is padding.
        :param causal: position t attends only to positions <= t (self-attention).
        :param cache: incremental decoding: self-attention appends this step's keys/values
            and attends to all cached ones; cross-attention computes them on the first call.
        :return: (B, T, C)
        """
        group = 1  # query rows per key row
        if self.self_attention:
            q, k, v = self._split_heads(self.qkv_proj(query), 3)
            if cache is not None:
                k, v = cache.append(k, v)
                causal = causal and query.size(1) > 1
        else:
            (q,) = self._split_heads(self.q_proj(query), 1)
            if cache is not None and cache.key is not None:
                k, v = cache.key, cache.value
            else:
                k, v = self._split_heads(self.kv_proj(key_value), 2)
                if cache is not None:
                    cache.key, cache.value = k, v
            group = cache.group if cache is not None else 1  # a beam may share its sentence's row
        return self._attend(q, k, v, key_padding_mask, causal, group)

    def self_attend_rows(self, query: torch.Tensor, step: BlockRows, cache: KVCache,
                         owed: torch.Tensor | None = None) -> torch.Tensor:
        """Incremental self-attention in which only ``step.rows`` run (the others exited).

        :param query: (R, 1, C) the running rows' inputs at the new position; their keys and
            values go into ``cache`` (the exited rows' entries stay owed, see ``CopiedStates``).
        :param owed: (M, C) the inputs of the earlier positions ``step.deferred`` names, whose
            keys/values are computed here, in the same product as the new position's.
        :return: (R, 1, C)
        """
        rows, batch = step.rows, step.batch
        inputs = query if owed is None else torch.cat([query, owed[:, None]], dim=0)  # (R + M, 1, C)
        q, k, v = self._split_heads(self.qkv_proj(inputs), 3)  # the module itself: plugins may replace it
        running = rows.numel()
        cache.append_rows(k[:running], v[:running], step)  # first: an owed position may be one it lacked
        if owed is not None:
            cache.write(step.deferred.rows, step.deferred.positions, k[running:, :, 0], v[running:, :, 0])
        q, k, v = q[:running], cache.key, cache.value  # (R, H, 1, hd); (N, H, L, hd) each
        if step.every_row:
            return self.out_proj(self._attention(q, k, v, None, causal=False))
        if _gather_first(rows, batch):
            return self.out_proj(self._attention(q, k[rows], v[rows], None, causal=False))
        every_row = q.new_zeros(batch, *q.shape[1:]).index_copy_(0, rows, q)  # (N, H, 1, hd)
        return self.out_proj(self._attention(every_row, k, v, None, causal=False)[rows])

    def cross_attend_rows(self, query: torch.Tensor, rows: torch.Tensor, key_value: torch.Tensor,
                          key_padding_mask: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Incremental cross-attention for ``rows`` of a batch whose keys/values are cached.

        :param query: (R, 1, C) the attending rows; ``key_value`` (N / g, S, C_kv) and
            ``key_padding_mask`` (N / g, S) cover every row's source (g = ``cache.group``
            consecutive rows share one) and fill ``cache`` on first use.
        :return: (R, 1, C)
        """
        if cache.key is None:
            cache.key, cache.value = self._split_heads(self.kv_proj(key_value), 2)
        (q,) = self._split_heads(self.q_proj(query), 1)  # (R, H, 1, hd)
        group, sources = cache.group, key_value.size(0)
        if rows.numel() == sources * group:  # every row runs
            return self._attend(q, cache.key, cache.value, key_padding_mask, False, group)
        if _gather_first(rows, sources * group):
            of_rows = rows // group  # (R,) each row's source
            return self._attend(q, cache.key[of_rows], cache.value[of_rows], key_padding_mask[of_rows], False)
        every_row = q.new_zeros(sources * group, *q.shape[1:]).index_copy_(0, rows, q)  # (N, H, 1, hd)
        return self._attend(every_row, cache.key, cache.value, key_padding_mask, False, group)[rows]

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
                causal: bool, group: int = 1) -> torch.Tensor:
        """q: (B * group, H, T, hd), k and v: (B, H, S, hd), key_padding_mask: (B, S) -> (B * group, T, C)."""
        return self.out_proj(self._attention(q, k, v, key_padding_mask, causal, group))

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
                   causal: bool, group: int = 1) -> torch.Tensor:
        """The heads' attention, concatenated, before the output projection: (B, T, H * hd).

        :param group: the queries' rows per key row: q (B * group, H, T, hd) against k and v
            (B, H, S, hd) and ``key_padding_mask`` (B, S); each group's queries attend together.
        """
        mask = None
        if key_padding_mask is not None:
            mask = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, S) True = may attend
        if group > 1:
            q = _fold(q, group)  # (B, H, group * T, hd)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, T, hd), or (B, H, group * T, hd)
        if group > 1:
            out = _unfold(out, group)  # (B * group, H, T, hd)
        batch, _, length, _ = out.shape
        return out.transpose(1, 2).reshape(batch, length, self.heads * self.head_dim)


def _fold(q: torch.Tensor, group: int) -> torch.Tensor:
    """(B * g, H, T, hd) -> (B, H, g * T, hd): a group's queries as one sequence of queries."""
    rows, heads, length, dim = q.shape
    if rows % group:
        raise ValueError(f"{rows} query rows do not divide into groups of {group} per key row")
    return q.view(rows // group, group, heads, length, dim).transpose(1, 2).reshape(
        rows // group, heads, group * length, dim)


def _unfold(out: torch.Tensor, group: int) -> torch.Tensor:
    """(B, H, g * T, hd) -> (B * g, H, T, hd), the inverse of ``_fold``."""
    batch, heads, length, dim = out.shape
    return out.view(batch, heads, group, length // group, dim).transpose(1, 2).reshape(
        batch * group, heads, length // group, dim)


def _gather_first(rows: torch.Tensor, batch: int) -> bool:
    """Whether ``rows`` are few enough of ``batch`` that copying their cached keys/values out is
    cheaper than attending with every row and keeping theirs. Attention of one new position is
    bound by reading the cache, and a copy reads and writes it too (the 1/8 comes from one
    hand timing on this project's CPU, see ``docs/DESIGN.md``)."""
    return rows.numel() * 8 < batch
