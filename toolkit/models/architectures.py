"""Named Transformer sizes. Each preset builds on another, so differences stay visible."""

from __future__ import annotations

import dataclasses

from toolkit.models.transformer import TransformerConfig


def transformer_base() -> TransformerConfig:
    """Vaswani et al. base: 6+6 blocks, 512 wide, FFN 2048, 8 heads."""
    return TransformerConfig()


def transformer_iwslt_de_en() -> TransformerConfig:
    """fairseq's IWSLT'14 De-En shape: 6+6, 512, FFN 1024, 4 heads."""
    return dataclasses.replace(transformer_base(), encoder_ffn_dim=1024, decoder_ffn_dim=1024,
                               encoder_attention_heads=4, decoder_attention_heads=4, dropout=0.3)


def transformer_depth_adaptive_iwslt() -> TransformerConfig:
    """Depth-Adaptive Transformer (Elbayad et al.) IWSLT shape: encoder 512, decoder 256, untied."""
    return dataclasses.replace(transformer_iwslt_de_en(), decoder_embed_dim=256, decoder_ffn_dim=1024,
                               share_decoder_input_output_embed=False, share_all_embeddings=False)


def transformer_small() -> TransformerConfig:
    """CPU benchmarks: 3+3 blocks, 256 wide, FFN 1024, 4 heads, all embeddings shared."""
    return dataclasses.replace(transformer_iwslt_de_en(), encoder_layers=3, decoder_layers=3,
                               encoder_embed_dim=256, decoder_embed_dim=256, share_all_embeddings=True,
                               dropout=0.2)


def transformer_tiny() -> TransformerConfig:
    """Tests and the embedded demo: 2+2 blocks, 128 wide, FFN 256, 4 heads."""
    return dataclasses.replace(transformer_small(), encoder_layers=2, decoder_layers=2,
                               encoder_embed_dim=128, decoder_embed_dim=128, encoder_ffn_dim=256,
                               decoder_ffn_dim=256, dropout=0.1, max_source_positions=256,
                               max_target_positions=256)


ARCHITECTURES = {
    f.__name__: f
    for f in (transformer_base, transformer_iwslt_de_en, transformer_depth_adaptive_iwslt,
              transformer_small, transformer_tiny)
}
