import dataclasses

import pytest
import torch

from toolkit.data.dictionary import Dictionary
from toolkit.models.architectures import ARCHITECTURES, transformer_tiny
from toolkit.models.transformer import TransformerModel

VOCAB = Dictionary(["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(40)])
PAD, EOS, BOS = VOCAB.pad, VOCAB.eos, VOCAB.bos


def build(**overrides) -> TransformerModel:
    torch.manual_seed(0)
    cfg = dataclasses.replace(transformer_tiny(), dropout=0.0, encoder_layers=2, decoder_layers=2,
                              encoder_embed_dim=32, decoder_embed_dim=32, encoder_ffn_dim=64,
                              decoder_ffn_dim=64, **overrides)
    return TransformerModel.from_config(cfg, VOCAB, VOCAB).eval()


def tokens(*rows: list[int], length: int) -> torch.Tensor:
    out = torch.full((len(rows), length), PAD)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


@pytest.mark.parametrize("pre_norm", [False, True])
def test_causal_future_target_tokens_do_not_change_earlier_outputs(pre_norm):
    model = build(normalize_before=pre_norm)
    src = torch.tensor([[5, 6, 7, EOS]])
    prev = torch.tensor([[BOS, 8, 9, 10, 11]])
    changed = prev.clone()
    changed[0, 3:] = torch.tensor([20, 21])
    a = model(src, None, prev).logits
    b = model(src, None, changed).logits
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


@pytest.mark.parametrize("pre_norm", [False, True])
def test_padding_does_not_change_unpadded_outputs(pre_norm):
    model = build(normalize_before=pre_norm)
    src_short, prev_short = [5, 6, EOS], [BOS, 8, 9]
    alone = model(torch.tensor([src_short]), None, torch.tensor([prev_short])).logits
    # the same pair padded in a batch next to a longer pair
    src = tokens(src_short, [5, 6, 7, 8, 9, 10, EOS], length=7)
    prev = tokens(prev_short, [BOS, 8, 9, 10, 11, 12], length=6)
    batched = model(src, None, prev).logits
    torch.testing.assert_close(batched[0, :3], alone[0], atol=1e-5, rtol=1e-5)


def test_source_changes_change_outputs():
    model = build()
    prev = torch.tensor([[BOS, 8, 9]])
    a = model(torch.tensor([[5, 6, EOS]]), None, prev).logits
    b = model(torch.tensor([[7, 6, EOS]]), None, prev).logits
    assert not torch.allclose(a, b)


def test_decoder_exposes_every_block_and_projects_any_of_them():
    model = build()
    out = model(torch.tensor([[5, 6, EOS]]), None, torch.tensor([[BOS, 8]]), return_all_hiddens=True)
    assert len(out.hidden_states) == 2
    assert all(h.shape == (1, 2, 32) for h in out.hidden_states)
    torch.testing.assert_close(model.decoder.project(out.hidden_states[-1]), out.logits)
    assert not torch.allclose(model.decoder.project(out.hidden_states[0]), out.logits)


def test_embedding_sharing_options():
    shared = build(share_all_embeddings=True)
    assert shared.encoder.embedding.embed_tokens.weight is shared.decoder.output_projection.weight
    tied = build(share_all_embeddings=False, share_decoder_input_output_embed=True)
    assert tied.decoder.embedding.embed_tokens.weight is tied.decoder.output_projection.weight
    assert tied.encoder.embedding.embed_tokens.weight is not tied.decoder.output_projection.weight
    untied = build(share_all_embeddings=False, share_decoder_input_output_embed=False)
    weights = {id(untied.encoder.embedding.embed_tokens.weight), id(untied.decoder.embedding.embed_tokens.weight),
               id(untied.decoder.output_projection.weight)}
    assert len(weights) == 3
    assert untied.num_parameters() > tied.num_parameters() > shared.num_parameters()


def test_share_all_embeddings_needs_a_joint_vocabulary():
    other = Dictionary(["<s>", "<pad>", "</s>", "<unk>", "x"])
    with pytest.raises(ValueError, match="joint vocabulary"):
        TransformerModel.from_config(dataclasses.replace(transformer_tiny(), share_all_embeddings=True), VOCAB, other)


def test_attention_uses_fused_projections():
    layer = build().decoder.layers[0]
    assert layer.self_attn.qkv_proj.out_features == 3 * 32
    assert layer.cross_attn.kv_proj.out_features == 2 * 32


def test_different_encoder_and_decoder_widths():
    cfg = dataclasses.replace(ARCHITECTURES["transformer_depth_adaptive_iwslt"](), encoder_layers=1,
                              decoder_layers=1, dropout=0.0)
    model = TransformerModel.from_config(cfg, VOCAB, VOCAB)
    out = model(torch.tensor([[5, EOS]]), None, torch.tensor([[BOS, 7, 8]]))
    assert out.logits.shape == (1, 3, len(VOCAB))
    assert model.encoder.layers[0].self_attn.qkv_proj.in_features == 512
    assert model.decoder.layers[0].cross_attn.kv_proj.in_features == 512
    assert model.decoder.output_projection.in_features == 256


def test_too_long_input_fails_clearly():
    model = build(max_source_positions=4)
    with pytest.raises(ValueError, match="longer than the model's 4 positions"):
        model(torch.tensor([[5, 6, 7, 8, EOS]]), None, torch.tensor([[BOS]]))


def test_named_architecture_shapes():
    small = ARCHITECTURES["transformer_small"]()
    assert (small.encoder_layers, small.decoder_layers, small.encoder_embed_dim, small.encoder_ffn_dim,
            small.encoder_attention_heads) == (3, 3, 256, 1024, 4)
    iwslt = ARCHITECTURES["transformer_iwslt_de_en"]()
    assert (iwslt.encoder_layers, iwslt.encoder_embed_dim, iwslt.encoder_ffn_dim, iwslt.encoder_attention_heads) == (
        6, 512, 1024, 4)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_incremental_decoding_equals_the_full_forward_pass(pre_norm):
    model = build(normalize_before=pre_norm)
    src = tokens([5, 6, 7, EOS], [8, 9, EOS], length=4)
    prev = torch.tensor([[BOS, 8, 9, 10, 11], [BOS, 12, 13, 14, 15]])
    encoder_out = model.encoder(src)
    full = model.decoder(prev, encoder_out).logits  # (B, T, V)
    state = model.decoder.new_state()
    steps = [model.decoder(prev[:, t : t + 1], encoder_out, state=state).logits for t in range(prev.size(1))]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_reordered_state_follows_the_hypotheses():
    model = build()
    src = torch.tensor([[5, 6, EOS], [5, 6, EOS]])
    prev = torch.tensor([[BOS, 8, 9], [BOS, 10, 11]])
    encoder_out = model.encoder(src)
    state = model.decoder.new_state()
    for t in range(2):
        model.decoder(prev[:, t : t + 1], encoder_out, state=state)
    state.reorder(torch.tensor([1, 1]))  # both slots continue hypothesis 1
    last = model.decoder(prev[:, 2:3], encoder_out, state=state).logits
    full = model.decoder(torch.tensor([[BOS, 10, 9], [BOS, 10, 11]]), encoder_out).logits
    torch.testing.assert_close(last[0, 0], full[0, 2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last[1, 0], full[1, 2], atol=1e-5, rtol=1e-5)
