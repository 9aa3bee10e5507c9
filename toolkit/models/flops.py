"""Matrix-multiply shapes and FLOP counts of a Transformer, for model FLOPs utilization (MFU).

Every count is of multiply-adds in matrix products, two FLOPs each: the projections, the
feed-forward layers, the output layer and the attention products (scores and weighted sums,
full T x T matrices, as computed). Element-wise work (norms, softmax, dropout) is not counted.
Training is three times the forward pass: each product reappears twice in the backward pass,
once for the input's gradient and once for the weight's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from toolkit.models.transformer import TransformerConfig


@dataclass(frozen=True)
class Gemm:
    """``count`` calls in one forward pass, each multiplying ``batch`` (m, k) by (k, n) matrices."""

    name: str
    m: int
    k: int
    n: int
    count: int = 1
    batch: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.count * self.batch


def transformer_gemms(cfg: TransformerConfig, vocab_size: int, batch: int, src_len: int,
                      tgt_len: int) -> list[Gemm]:
    """The forward pass's matrix products for ``batch`` sentence pairs padded to the given lengths."""
    enc, dec = cfg.encoder_embed_dim, cfg.decoder_embed_dim
    src, tgt = batch * src_len, batch * tgt_len  # rows of the token-wise products
    gemms: list[Gemm] = []
    enc_heads, dec_heads = batch * cfg.encoder_attention_heads, batch * cfg.decoder_attention_heads
    enc_hd, dec_hd = enc // cfg.encoder_attention_heads, dec // cfg.decoder_attention_heads
    layers = cfg.encoder_layers
    gemms += [
        Gemm("encoder qkv projection", src, enc, 3 * enc, layers),
        *_attention("encoder attention", src_len, src_len, enc_hd, layers, enc_heads),
        Gemm("encoder out projection", src, enc, enc, layers),
        Gemm("encoder ffn in", src, enc, cfg.encoder_ffn_dim, layers),
        Gemm("encoder ffn out", src, cfg.encoder_ffn_dim, enc, layers),
    ]
    layers = cfg.decoder_layers
    gemms += [
        Gemm("decoder qkv projection", tgt, dec, 3 * dec, layers),
        *_attention("decoder self-attention", tgt_len, tgt_len, dec_hd, layers, dec_heads),
        Gemm("decoder self out projection", tgt, dec, dec, layers),
        Gemm("decoder cross q projection", tgt, dec, dec, layers),
        Gemm("decoder cross kv projection", src, enc, 2 * dec, layers),
        *_attention("decoder cross-attention", tgt_len, src_len, dec_hd, layers, dec_heads),
        Gemm("decoder cross out projection", tgt, dec, dec, layers),
        Gemm("decoder ffn in", tgt, dec, cfg.decoder_ffn_dim, layers),
        Gemm("decoder ffn out", tgt, cfg.decoder_ffn_dim, dec, layers),
        Gemm("output layer", tgt, dec, vocab_size, 1),
    ]
    return gemms


def _attention(name: str, queries: int, keys: int, head_dim: int, layers: int, heads: int) -> list[Gemm]:
    """Scores (queries x keys) and the weighted sum of values, for every head of every sentence."""
    return [Gemm(f"{name} scores", queries, head_dim, keys, layers, heads),
            Gemm(f"{name} values", queries, keys, head_dim, layers, heads)]


def forward_flops(gemms: Iterable[Gemm]) -> int:
    return sum(g.flops for g in gemms)


def training_flops(cfg: TransformerConfig, vocab_size: int, lengths: Iterable[tuple[int, int]]) -> int:
    """Training FLOPs (forward and backward) of the given (source, target) sentence lengths,
    each counted without padding."""
    return 3 * sum(forward_flops(transformer_gemms(cfg, vocab_size, 1, s, t)) for s, t in lengths)
