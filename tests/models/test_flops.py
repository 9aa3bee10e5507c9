import dataclasses

from toolkit.models.architectures import transformer_small
from toolkit.models.flops import forward_flops, training_flops, transformer_gemms
from toolkit.models.transformer import TransformerConfig


def test_tiny_model_matches_a_hand_count():
    cfg = TransformerConfig(encoder_layers=1, decoder_layers=1, encoder_embed_dim=4, decoder_embed_dim=4,
                            encoder_ffn_dim=8, decoder_ffn_dim=8, encoder_attention_heads=2,
                            decoder_attention_heads=2)
    S, T, V = 3, 2, 10  # one sentence pair: 3 source tokens, 2 target tokens
    # multiply-adds, written out product by product (d=4, ffn=8, 2 heads of width 2)
    encoder = (S * 4 * 12  # qkv
               + 2 * (S * 2 * S) + 2 * (S * S * 2)  # scores and values, per head
               + S * 4 * 4  # out projection
               + S * 4 * 8 + S * 8 * 4)  # ffn
    decoder = (T * 4 * 12 + 2 * (T * 2 * T) + 2 * (T * T * 2) + T * 4 * 4  # self-attention
               + T * 4 * 4 + S * 4 * 8 + 2 * (T * 2 * S) + 2 * (T * S * 2) + T * 4 * 4  # cross
               + T * 4 * 8 + T * 8 * 4  # ffn
               + T * 4 * V)  # output layer
    assert forward_flops(transformer_gemms(cfg, V, 1, S, T)) == 2 * (encoder + decoder)
    assert training_flops(cfg, V, [(S, T)]) == 6 * (encoder + decoder)
    assert training_flops(cfg, V, [(S, T), (S, T)]) == 12 * (encoder + decoder)


def test_transformer_small_costs_about_46_mflop_per_target_token():
    # the figure the speed issue quotes for 3+3 x 256, FFN 1024, an 8k vocabulary, ~13-token sentences
    per_token = training_flops(transformer_small(), 8000, [(13, 13)]) / 13
    assert 44e6 < per_token < 48e6


def test_more_layers_cost_proportionally_more():
    cfg = transformer_small()
    deeper = dataclasses.replace(cfg, encoder_layers=6)
    gemms, deeper_gemms = transformer_gemms(cfg, 100, 2, 5, 5), transformer_gemms(deeper, 100, 2, 5, 5)
    encoder = sum(g.flops for g in gemms if g.name.startswith("encoder"))
    assert forward_flops(deeper_gemms) - forward_flops(gemms) == encoder
