"""The encoder-decoder interface every model implements."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EncoderOutput:
    states: torch.Tensor  # (B, S, C_enc)
    padding_mask: torch.Tensor  # (B, S) True at padding

    def select(self, rows: torch.Tensor) -> "EncoderOutput":
        """Keep only the sentences ``rows`` (B',): when finished sentences leave a batch."""
        return EncoderOutput(self.states[rows], self.padding_mask[rows])


@dataclass
class DecoderOutput:
    logits: torch.Tensor  # (B, T, V) from the last block
    hidden_states: list[torch.Tensor] = field(default_factory=list)  # per block, (B, T, C_dec)
    encoder_out: EncoderOutput | None = None  # set by the model's forward: criteria may read it (halting)


class EncoderDecoderModel(nn.Module):
    """An encoder and a decoder; ``forward`` is teacher-forced training.

    Decoders expose every block's hidden state (``return_all_hiddens``) and ``project`` any of
    them onto the vocabulary, so plugins can read or exit at intermediate blocks.
    """

    encoder: nn.Module
    decoder: nn.Module
    # True when a training step may leave parameters without gradient (LayerDrop skipping
    # blocks): distributed data parallelism then looks for them at every step
    find_unused_parameters: bool = False

    def forward(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor,
                prev_output_tokens: torch.Tensor, return_all_hiddens: bool = False) -> DecoderOutput:
        encoder_out = self.encoder(src_tokens, src_lengths)
        out = self.decoder(prev_output_tokens, encoder_out, return_all_hiddens=return_all_hiddens)
        out.encoder_out = encoder_out
        return out

    @staticmethod
    def log_probs(logits: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits.float(), dim=-1)

    def max_positions(self) -> tuple[int, int]:
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
