"""Label-smoothed cross-entropy (Szegedy et al.) with padding ignored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from toolkit.criterions.base import Criterion


@dataclass
class LabelSmoothedCEConfig:
    _name: str = "label_smoothed_cross_entropy"
    label_smoothing: float = 0.1


def label_smoothed_nll_loss(lprobs: torch.Tensor, target: torch.Tensor, epsilon: float,
                            ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed smoothed loss and NLL over non-padding positions.

    The smoothed target puts ``1 - epsilon`` on the gold token and ``epsilon / (V - 1)`` on
    each other token: loss = (1 - eps - eps_i) * nll + eps_i * sum_v(-log p_v), eps_i = eps/(V-1).

    :param lprobs: (N, V) log-probabilities.
    :param target: (N,) gold ids.
    """
    keep = target.ne(ignore_index)  # (N,)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (N,)
    smooth = -lprobs.sum(-1)  # (N,)
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    return loss.masked_select(keep).sum(), nll.masked_select(keep).sum()


class LabelSmoothedCrossEntropy(Criterion):
    def __init__(self, cfg: LabelSmoothedCEConfig, padding_idx: int):
        super().__init__()
        if not 0.0 <= cfg.label_smoothing < 1.0:
            raise ValueError(f"criterion.label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
        self.epsilon, self.padding_idx = cfg.label_smoothing, padding_idx

    def forward(self, model, sample: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, Any]]:
        logits = model(**sample["net_input"]).logits  # (B, T, V)
        lprobs = model.log_probs(logits).view(-1, logits.size(-1))  # (B*T, V)
        loss, nll = label_smoothed_nll_loss(lprobs, sample["target"].view(-1), self.epsilon, self.padding_idx)
        ntokens = sample["ntokens"]
        return loss, ntokens, {"loss": loss.detach(), "nll_loss": nll.detach(), "ntokens": ntokens,
                               "nsentences": sample["nsentences"], "sample_size": ntokens}
