"""The Transformer encoder-decoder: config, encoder, decoder, and the factory that builds them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Optional

import torch
from torch import nn

from toolkit.data.dictionary import Dictionary
from toolkit.models.base import DecoderOutput, EncoderDecoderModel, EncoderOutput
from toolkit.models.incremental_state import IncrementalState
from toolkit.models.layers import DecoderLayer, EncoderLayer, TokenEmbedding, build_embedding


@dataclass
class TransformerConfig:
    _name: str = "transformer"
    arch: Optional[str] = None  # the named preset this config came from, if any
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_embed_dim: int = 512
    decoder_embed_dim: int = 512
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    encoder_attention_heads: int = 8
    decoder_attention_heads: int = 8
    normalize_before: bool = False  # pre-norm blocks (plus a final norm) instead of post-norm
    activation_fn: str = "relu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    share_decoder_input_output_embed: bool = True  # tie decoder input embeddings and output layer
    share_all_embeddings: bool = False  # also tie the encoder's (needs a joint vocabulary)
    scale_embedding: bool = True  # multiply embeddings by sqrt(dim)
    max_source_positions: int = 1024
    max_target_positions: int = 1024


# A plugin's choice of blocks to leave out of one training forward (LayerDrop): called once per
# forward in training mode, it returns the 0-based indices of the blocks not to run.
BlockSkipper = Callable[[], Collection[int]]


def skipped_blocks(stack: nn.Module) -> Collection[int]:
    """The blocks ``stack`` (an encoder or decoder) leaves out of this forward: its
    ``skip_blocks`` callable's choice in training mode, none in eval mode or without one.

    A skipped block is not computed: its input passes to the next block unchanged. Set
    ``stack.skip_blocks`` in ``toolkit_modify_model`` (see ``toolkit.hooks``).
    """
    if stack.skip_blocks is None or not stack.training:
        return ()
    return stack.skip_blocks()


class TransformerEncoder(nn.Module):
    def __init__(self, embedding: TokenEmbedding, layers: list[EncoderLayer], final_norm: nn.Module,
                 padding_idx: int):
        super().__init__()
        self.embedding, self.layers, self.final_norm = embedding, nn.ModuleList(layers), final_norm
        self.padding_idx = padding_idx
        self.skip_blocks: BlockSkipper | None = None  # set by plugins (LayerDrop)

    def forward(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None = None) -> EncoderOutput:
        """src_tokens: (B, S) right-padded."""
        padding_mask = src_tokens.eq(self.padding_idx)  # (B, S)
        x = self.embedding(src_tokens)  # (B, S, C)
        skipped = skipped_blocks(self)
        for i, layer in enumerate(self.layers):
            if i not in skipped:
                x = layer(x, padding_mask)
        return EncoderOutput(self.final_norm(x), padding_mask)


class TransformerDecoder(nn.Module):
    """Causal decoder; ``output_projection`` maps any block's (normalized) state to logits."""

    def __init__(self, embedding: TokenEmbedding, layers: list[DecoderLayer], final_norm: nn.Module,
                 output_projection: nn.Linear):
        super().__init__()
        self.embedding, self.layers, self.final_norm = embedding, nn.ModuleList(layers), final_norm
        self.output_projection = output_projection
        # per-block classifiers for early exits (one per block but the last), set by plugins
        self.exit_heads: nn.ModuleList | None = None
        self.skip_blocks: BlockSkipper | None = None  # set by plugins (LayerDrop); never with ``state``

    def forward(self, prev_output_tokens: torch.Tensor, encoder_out: EncoderOutput,
                return_all_hiddens: bool = False, state: IncrementalState | None = None) -> DecoderOutput:
        """prev_output_tokens: (B, T) -> logits (B, T, V); every block's state if asked.

        With ``state`` (incremental decoding) ``prev_output_tokens`` holds only the new
        positions; keys and values of earlier ones come from the state's caches.
        """
        start = state.length if state is not None else 0
        x = self.embedding(prev_output_tokens, start)  # (B, T, C)
        hidden_states = []
        skipped = skipped_blocks(self) if state is None else ()
        for i, layer in enumerate(self.layers):
            caches = (state.self_attn[i], state.cross_attn[i]) if state is not None else (None, None)
            if i not in skipped:
                x = layer(x, encoder_out.states, encoder_out.padding_mask, *caches)
            if return_all_hiddens:
                hidden_states.append(x)
        if state is not None:
            state.length += prev_output_tokens.size(1)
        return DecoderOutput(self.project(x), hidden_states)

    def new_state(self, rows_per_source: int = 1) -> IncrementalState:
        """Empty caches for incremental decoding; ``rows_per_source`` hypotheses (a beam)
        share each row of the encoder output passed to the steps (see ``IncrementalState``)."""
        return IncrementalState(len(self.layers), rows_per_source)

    def project(self, hidden: torch.Tensor, block: int | None = None) -> torch.Tensor:
        """A block's state (..., C) -> vocabulary logits (..., V).

        :param block: 0-based index of the block ``hidden`` comes from. Blocks below the last
            use their own classifier when a plugin gave them one (``exit_heads[block]``, a
            module mapping states to logits); otherwise every block shares the final norm and
            output projection.
        """
        if block is not None and self.exit_heads is not None and block < len(self.layers) - 1:
            return self.exit_heads[block](hidden)
        return self.output_projection(self.final_norm(hidden))


class TransformerModel(EncoderDecoderModel):
    def __init__(self, cfg: TransformerConfig, encoder: TransformerEncoder, decoder: TransformerDecoder):
        super().__init__()
        self.cfg, self.encoder, self.decoder = cfg, encoder, decoder

    @classmethod
    def from_config(cls, cfg: TransformerConfig, src_dict: Dictionary, tgt_dict: Dictionary) -> "TransformerModel":
        """Assemble embeddings, blocks and output layer, tied as the config says."""
        _check(cfg, src_dict, tgt_dict)
        src_embed = build_embedding(len(src_dict), cfg.encoder_embed_dim, src_dict.pad)
        tgt_embed = src_embed if cfg.share_all_embeddings else build_embedding(
            len(tgt_dict), cfg.decoder_embed_dim, tgt_dict.pad)
        encoder = TransformerEncoder(
            TokenEmbedding(src_embed, cfg.max_source_positions, cfg.dropout, cfg.scale_embedding),
            [EncoderLayer(cfg.encoder_embed_dim, cfg.encoder_ffn_dim, cfg.encoder_attention_heads,
                          cfg.dropout, cfg.attention_dropout, cfg.activation_dropout, cfg.activation_fn,
                          cfg.normalize_before) for _ in range(cfg.encoder_layers)],
            _final_norm(cfg.encoder_embed_dim, cfg.normalize_before), src_dict.pad)
        output_projection = nn.Linear(cfg.decoder_embed_dim, len(tgt_dict), bias=False)
        if cfg.share_decoder_input_output_embed or cfg.share_all_embeddings:
            output_projection.weight = tgt_embed.weight
        else:
            nn.init.normal_(output_projection.weight, mean=0, std=cfg.decoder_embed_dim**-0.5)
        decoder = TransformerDecoder(
            TokenEmbedding(tgt_embed, cfg.max_target_positions, cfg.dropout, cfg.scale_embedding),
            [DecoderLayer(cfg.decoder_embed_dim, cfg.decoder_ffn_dim, cfg.decoder_attention_heads,
                          cfg.encoder_embed_dim, cfg.dropout, cfg.attention_dropout, cfg.activation_dropout,
                          cfg.activation_fn, cfg.normalize_before) for _ in range(cfg.decoder_layers)],
            _final_norm(cfg.decoder_embed_dim, cfg.normalize_before), output_projection)
        return cls(cfg, encoder, decoder)

    def max_positions(self) -> tuple[int, int]:
        return self.cfg.max_source_positions, self.cfg.max_target_positions


def _final_norm(dim: int, pre_norm: bool) -> nn.Module:
    # Pre-norm blocks leave their output unnormalized; post-norm blocks end in a norm already.
    return nn.LayerNorm(dim) if pre_norm else nn.Identity()


def _check(cfg: TransformerConfig, src_dict: Dictionary, tgt_dict: Dictionary) -> None:
    if cfg.share_all_embeddings:
        if src_dict != tgt_dict:
            raise ValueError("model.share_all_embeddings needs a joint vocabulary (task.joint_vocab=true)")
        if cfg.encoder_embed_dim != cfg.decoder_embed_dim:
            raise ValueError("model.share_all_embeddings needs encoder_embed_dim == decoder_embed_dim")
    for side in ("encoder", "decoder"):
        layers, dim, heads = (getattr(cfg, f"{side}_{k}") for k in ("layers", "embed_dim", "attention_heads"))
        if layers < 1 or dim < 1 or heads < 1 or dim % heads:
            raise ValueError(f"model: {side} needs >= 1 layer and an embed_dim ({dim}) divisible "
                             f"by attention_heads ({heads})")
