"""Halting classifiers q(n) over exit blocks n = 1..N (Elbayad et al. §3.2).

- ``sequence``: q(n|x) = softmax(W s + b), s the mean encoder state of the sentence;
- ``token_multinomial``: q_t(n) = softmax(W h_t^1 + b), from the first block's state;
- ``token_geometric``: chi_t^n = sigmoid(w_n . h_t^n + b_n) for n < N and
  q_t(n) = chi_t^n prod_{n'<n} (1 - chi_t^{n'}), the remaining mass at N. With ``hidden`` K > 0
  (not in the paper) each block's logit comes from one hidden layer instead:
  w_n . relu(U_n h_t^n + c_n) + b_n, U_n (K, C).

Every ``distribution`` returns log q, (B, N) for ``sequence`` and (B, T, N) for the others.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from toolkit.models.base import EncoderOutput
from toolkit.errors import ConfigError

KINDS = ("none", "sequence", "token_multinomial", "token_geometric")


def mean_source_state(encoder_out: EncoderOutput) -> torch.Tensor:
    """(B, C): the mean of each sentence's encoder states over its non-padding positions."""
    keep = (~encoder_out.padding_mask).unsqueeze(-1).to(encoder_out.states.dtype)  # (B, S, 1)
    return (encoder_out.states * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def geometric_log_q(log_chi: torch.Tensor, log_not_chi: torch.Tensor) -> torch.Tensor:
    """log q(n) from per-block log chi^n and log (1 - chi^n), n = 1..N-1 (last dim): (..., N)."""
    survive = torch.cumsum(log_not_chi, dim=-1)  # log prod_{n' <= n} (1 - chi)
    before = F.pad(survive, (1, 0))[..., :-1]  # log prod_{n' < n} (1 - chi), n = 1..N-1
    return torch.cat([before + log_chi, survive[..., -1:]], dim=-1)


class HaltingHead(nn.Module):
    """The halting classifier of one kind, for an ``encoder_dim``/``decoder_dim`` model of ``blocks`` blocks."""

    def __init__(self, kind: str, blocks: int, encoder_dim: int, decoder_dim: int, hidden: int = 0):
        super().__init__()
        if kind not in KINDS[1:]:
            raise ConfigError(f"plugins.options.depth_adaptive.halting must be one of {KINDS}, got {kind!r}")
        if hidden < 0 or (hidden and kind != "token_geometric"):
            raise ConfigError(f"plugins.options.depth_adaptive.halting_hidden must be 0, or > 0 with "
                              f"halting=token_geometric; got {hidden} with {kind}")
        self.kind, self.blocks = kind, blocks
        if kind == "sequence":
            self.classifier = nn.Linear(encoder_dim, blocks)
        elif kind == "token_multinomial":
            self.classifier = nn.Linear(decoder_dim, blocks)
        else:  # one sigmoid unit per block but the last, on the state or on a hidden layer
            if hidden:
                self.hidden_weight = nn.Parameter(torch.randn(blocks - 1, decoder_dim, hidden) / decoder_dim ** 0.5)
                self.hidden_bias = nn.Parameter(torch.zeros(blocks - 1, hidden))
            self.weight = nn.Parameter(torch.zeros(blocks - 1, hidden or decoder_dim))
            self.bias = nn.Parameter(torch.zeros(blocks - 1))

    def sequence_log_q(self, encoder_out: EncoderOutput) -> torch.Tensor:
        """(B, N) log q(n|x)."""
        return torch.log_softmax(self.classifier(mean_source_state(encoder_out)).float(), dim=-1)

    def multinomial_log_q(self, first_block: torch.Tensor) -> torch.Tensor:
        """(..., N) log q_t(n) from the first block's states (..., C)."""
        return torch.log_softmax(self.classifier(first_block).float(), dim=-1)

    def chi_logit(self, hidden: torch.Tensor, block: int) -> torch.Tensor:
        """(...,) the logit of chi^n for 0-based ``block`` < N-1 from its states (..., C)."""
        features = hidden.float()
        if hasattr(self, "hidden_weight"):
            hidden_layer = features @ self.hidden_weight[block].float() + self.hidden_bias[block].float()  # (..., K)
            features = torch.relu(hidden_layer)
        return (features @ self.weight[block].float()) + self.bias[block].float()

    def geometric_log_q(self, hidden_states: list[torch.Tensor]) -> torch.Tensor:
        """(B, T, N) log q_t(n) from every block's states (B, T, C)."""
        logits = torch.stack([self.chi_logit(h, n) for n, h in enumerate(hidden_states[:-1])], dim=-1)
        return geometric_log_q(F.logsigmoid(logits), F.logsigmoid(-logits))

    def distribution(self, encoder_out: EncoderOutput, hidden_states: list[torch.Tensor]) -> torch.Tensor:
        """log q: (B, N) for ``sequence``, else (B, T, N)."""
        if self.kind == "sequence":
            return self.sequence_log_q(encoder_out)
        if self.kind == "token_multinomial":
            return self.multinomial_log_q(hidden_states[0])
        return self.geometric_log_q(hidden_states)
