"""Helpers of the depth_adaptive tests (a module of its own name: every plugin's tests folder has
a conftest.py, and ``from conftest import`` would find whichever was imported last)."""

from __future__ import annotations

import dataclasses

import torch

from toolkit.data.dictionary import Dictionary
from toolkit.models.architectures import transformer_tiny
from toolkit.models.transformer import TransformerModel

VOCAB = Dictionary(["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(40)])
BLOCKS = 4


def tiny_model(blocks: int = BLOCKS, pre_norm: bool = True, seed: int = 0) -> TransformerModel:
    """A random 2-block encoder, ``blocks``-block decoder, 32 wide, no dropout."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(transformer_tiny(), dropout=0.0, encoder_layers=2, decoder_layers=blocks,
                              encoder_embed_dim=32, decoder_embed_dim=32, encoder_ffn_dim=64,
                              decoder_ffn_dim=64, normalize_before=pre_norm)
    return TransformerModel.from_config(cfg, VOCAB, VOCAB)


def tiny_batch(rows: int = 3, src_len: int = 5, tgt_len: int = 6, seed: int = 1) -> dict:
    """A teacher-forcing batch with some padding."""
    generator = torch.Generator().manual_seed(seed)
    src = torch.randint(4, len(VOCAB), (rows, src_len), generator=generator)
    tgt = torch.randint(4, len(VOCAB), (rows, tgt_len), generator=generator)
    src[0, -2:], tgt[0, -2:] = VOCAB.pad, VOCAB.pad
    prev = torch.cat([torch.full((rows, 1), VOCAB.eos), tgt[:, :-1]], dim=1)
    prev[0, -1] = VOCAB.pad
    ntokens = int(tgt.ne(VOCAB.pad).sum())
    return {"net_input": {"src_tokens": src, "src_lengths": src.ne(VOCAB.pad).sum(1), "prev_output_tokens": prev},
            "target": tgt, "ntokens": ntokens, "nsentences": rows}
