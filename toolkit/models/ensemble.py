"""Several trained models decoding as one: each step's distribution is the mean of the members'.

``EnsembleModel([model_a, model_b])`` offers what ``SequenceGenerator`` asks of a model: an
encoder, a decoder with incremental state, ``log_probs`` and ``max_positions``. At every step
the members decode the same prefix from their own encoder outputs and caches, and the ensemble
scores each token with log((1/M) sum_m p_m(token)), the mean of the members' probabilities (as
fairseq's ensembles do). The members must share their vocabularies
(``toolkit.inference.check_same_vocabularies`` compares the checkpoints' tokenizers); depth and
width may differ.

Teacher-forced ``forward`` returns the same mean in ``logits`` (normalized log-probabilities),
so a criterion that reads a teacher's distribution can take an ensemble as its teacher.
Early-exit policies decode one model's blocks and are refused for ensembles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from toolkit.errors import ConfigError
from toolkit.models.base import DecoderOutput, EncoderDecoderModel, EncoderOutput


@dataclass
class EnsembleEncoderOutput:
    """One ``EncoderOutput`` per member, in member order."""

    outputs: list[EncoderOutput]

    def select(self, rows: torch.Tensor) -> "EnsembleEncoderOutput":
        """Keep only the sentences ``rows`` (B',) of every member's output."""
        return EnsembleEncoderOutput([out.select(rows) for out in self.outputs])


class EnsembleState:
    """Every member's incremental state, following the same beam moves."""

    def __init__(self, states: list):
        self.states = states

    def reorder(self, new_order: torch.Tensor) -> None:
        for state in self.states:
            state.reorder(new_order)

    def select_sentences(self, rows: torch.Tensor) -> None:
        for state in self.states:
            state.select_sentences(rows)


def mean_log_probs(per_member: Sequence[torch.Tensor]) -> torch.Tensor:
    """log of the mean probability over members: M tensors (..., V) of log-probabilities ->
    (..., V), computed in log space (``logsumexp``) so small probabilities do not underflow."""
    stacked = torch.stack([lp.float() for lp in per_member])  # (M, ..., V)
    return torch.logsumexp(stacked, dim=0) - math.log(len(per_member))


class EnsembleEncoder:
    """Runs every member's encoder on the same source batch."""

    def __init__(self, members: nn.ModuleList):
        self.members = members

    def __call__(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor | None = None) -> EnsembleEncoderOutput:
        return EnsembleEncoderOutput([m.encoder(src_tokens, src_lengths) for m in self.members])


class EnsembleDecoder:
    """Runs every member's decoder on the same prefix; ``logits`` of its output are the mean
    distribution's log-probabilities (already normalized)."""

    def __init__(self, members: nn.ModuleList):
        self.members = members

    @property
    def layers(self) -> nn.ModuleList:
        """The deepest member's blocks: the generator counts every decoded token at the last."""
        return max((m.decoder.layers for m in self.members), key=len)

    def new_state(self, rows_per_source: int = 1) -> EnsembleState:
        return EnsembleState([m.decoder.new_state(rows_per_source) for m in self.members])

    def __call__(self, prev_output_tokens: torch.Tensor, encoder_out: EnsembleEncoderOutput,
                 state: EnsembleState | None = None) -> DecoderOutput:
        """prev_output_tokens: (B, T) (only the new positions with ``state``) -> logits (B, T, V)."""
        per_member = []
        for i, member in enumerate(self.members):
            out = member.decoder(prev_output_tokens, encoder_out.outputs[i],
                                 state=state.states[i] if state is not None else None)
            per_member.append(member.log_probs(out.logits))  # (B, T, V)
        return DecoderOutput(mean_log_probs(per_member))


class EnsembleModel(EncoderDecoderModel):
    """M >= 2 models of one vocabulary; see the module's docstring."""

    def __init__(self, members: Sequence[EncoderDecoderModel]):
        super().__init__()
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least two models, got {len(members)}")
        self.members = nn.ModuleList(members)
        # plain objects, not submodules: the members' parameters are registered once
        self.encoder = EnsembleEncoder(self.members)
        self.decoder = EnsembleDecoder(self.members)

    def forward(self, src_tokens: torch.Tensor, src_lengths: torch.Tensor,
                prev_output_tokens: torch.Tensor, return_all_hiddens: bool = False) -> DecoderOutput:
        if return_all_hiddens:
            raise ConfigError("an ensemble has no single stack of blocks: return_all_hiddens is per model")
        return self.decoder(prev_output_tokens, self.encoder(src_tokens, src_lengths))

    @staticmethod
    def log_probs(logits: torch.Tensor) -> torch.Tensor:
        """The decoder's output is already the mean distribution's log-probabilities."""
        return logits.float()

    def max_positions(self) -> tuple[int, int]:
        sources, targets = zip(*(m.max_positions() for m in self.members))
        return min(sources), min(targets)


def refuse_exit_policy(model: nn.Module, exit_policy) -> None:
    """Exit policies decode one model's blocks: fail if ``model`` is an ensemble and a policy is set."""
    if exit_policy is not None and isinstance(model, EnsembleModel):
        raise ConfigError("exit policies decode one model's blocks: an ensemble decodes at full depth "
                          "(drop generation.exit_policy, or decode one checkpoint)")
