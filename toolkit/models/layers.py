"""Transformer blocks (post-norm as in Vaswani et al., or pre-norm) and embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.models.attention import MultiheadAttention
from toolkit.models.dropout import Dropout
from toolkit.models.incremental_state import BlockRows, KVCache

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str, activation_dropout: float):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.activation, self.dropout = ACTIVATIONS[activation], Dropout(activation_dropout)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(x))))


class Residual(nn.Module):
    """``x + dropout(f(norm(x)))`` (pre-norm) or ``norm(x + dropout(f(x)))`` (post-norm)."""

    def __init__(self, dim: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.norm, self.dropout, self.pre_norm = nn.LayerNorm(dim), Dropout(dropout), pre_norm

    def forward(self, x: torch.Tensor, sublayer) -> torch.Tensor:
        return self.add(x, sublayer(self.sublayer_input(x)))

    def sublayer_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) if self.pre_norm else x

    def add(self, x: torch.Tensor, sublayer_output: torch.Tensor) -> torch.Tensor:
        """The residual connection around what the sublayer made of ``sublayer_input(x)``."""
        if self.pre_norm:
            return x + self.dropout(sublayer_output)
        return self.norm(x + self.dropout(sublayer_output))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, heads: int, dropout: float, attention_dropout: float,
                 activation_dropout: float, activation: str, pre_norm: bool):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads, attention_dropout)
        self.ffn = FeedForward(dim, ffn_dim, activation, activation_dropout)
        self.attn_block = Residual(dim, dropout, pre_norm)
        self.ffn_block = Residual(dim, dropout, pre_norm)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, S, C); padding_mask: (B, S) True at padding."""
        x = self.attn_block(x, lambda h: self.self_attn(h, key_padding_mask=padding_mask))
        return self.ffn_block(x, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, heads: int, encoder_dim: int, dropout: float,
                 attention_dropout: float, activation_dropout: float, activation: str, pre_norm: bool):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads, attention_dropout)
        self.cross_attn = MultiheadAttention(dim, heads, attention_dropout, kv_dim=encoder_dim)
        self.ffn = FeedForward(dim, ffn_dim, activation, activation_dropout)
        self.self_attn_block = Residual(dim, dropout, pre_norm)
        self.cross_attn_block = Residual(dim, dropout, pre_norm)
        self.ffn_block = Residual(dim, dropout, pre_norm)

    def forward(self, x: torch.Tensor, encoder_states: torch.Tensor, encoder_padding_mask: torch.Tensor,
                self_cache: KVCache | None = None, cross_cache: KVCache | None = None,
                rows: BlockRows | None = None) -> torch.Tensor:
        """x: (B, T, C); encoder_states: (B, S, C_enc); encoder_padding_mask: (B, S).

        Target padding sits right of every real token, so the causal mask alone keeps real
        positions from seeing it. With caches, ``x`` holds only the newest position(s).

        :param rows: incremental decoding with early exits: only ``rows.rows`` run the block;
            the other rows of ``x`` come back unchanged and add nothing to its cache now. The
            keys/values the block owes to earlier positions of the running rows, which exited
            below it (``rows.deferred``), are computed from their copied states first.
        """
        if rows is not None:
            return self._forward_rows(x, rows, encoder_states, encoder_padding_mask, self_cache, cross_cache)
        x = self.self_attn_block(x, lambda h: self.self_attn(h, causal=True, cache=self_cache))
        x = self.cross_attn_block(x, lambda h: self.cross_attn(
            h, encoder_states, key_padding_mask=encoder_padding_mask, cache=cross_cache))
        return self.ffn_block(x, self.ffn)

    def _forward_rows(self, x: torch.Tensor, step: BlockRows, encoder_states: torch.Tensor,
                      encoder_padding_mask: torch.Tensor, self_cache: KVCache, cross_cache: KVCache) -> torch.Tensor:
        """x: (N, 1, C) -> (N, 1, C), the block applied to ``step.rows`` (R,) only."""
        y = x if step.every_row else x.index_select(0, step.rows)  # (R, 1, C)
        owed = None
        if step.deferred is not None:
            owed = self.self_attn_block.sublayer_input(step.deferred.states)  # (M, C)
        attended = self.self_attn.self_attend_rows(self.self_attn_block.sublayer_input(y), step, self_cache, owed)
        y = self.self_attn_block.add(y, attended)  # (R, 1, C)
        y = self.cross_attn_block(y, lambda h: self.cross_attn.cross_attend_rows(
            h, step.rows, encoder_states, encoder_padding_mask, cross_cache))
        y = self.ffn_block(y, self.ffn)
        return y if step.every_row else x.index_copy(0, step.rows, y)


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos position encodings (Vaswani et al.), computed once up to ``max_positions``."""

    def __init__(self, dim: int, max_positions: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / max(1, half - 1)))
        angles = torch.arange(max_positions, dtype=torch.float)[:, None] * freqs[None, :]
        table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (P, 2*half)
        if dim % 2:
            table = F.pad(table, (0, 1))
        self.register_buffer("table", table, persistent=False)

    def forward(self, length: int, start: int = 0) -> torch.Tensor:
        if start + length > self.table.size(0):
            raise ValueError(f"sequence of {start + length} tokens is longer than the model's "
                             f"{self.table.size(0)} positions")
        return self.table[start : start + length]  # (T, C)


class TokenEmbedding(nn.Module):
    """Scaled token embeddings plus positions, then dropout."""

    def __init__(self, embed_tokens: nn.Embedding, max_positions: int, dropout: float, scale: bool):
        super().__init__()
        dim = embed_tokens.embedding_dim
        self.embed_tokens = embed_tokens
        self.positions = SinusoidalPositions(dim, max_positions)
        self.scale = math.sqrt(dim) if scale else 1.0
        self.dropout = Dropout(dropout)

    def forward(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """tokens: (B, L) at positions start.. -> (B, L, C)"""
        x = self.embed_tokens(tokens) * self.scale + self.positions(tokens.size(1), start)
        return self.dropout(x)


def build_embedding(num_embeddings: int, dim: int, padding_idx: int) -> nn.Embedding:
    embedding = nn.Embedding(num_embeddings, dim, padding_idx=padding_idx)
    nn.init.normal_(embedding.weight, mean=0, std=dim**-0.5)
    nn.init.zeros_(embedding.weight[padding_idx])
    return embedding
