"""Label-smoothed cross-entropy (Szegedy et al.) with padding ignored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from toolkit.criterions.base import Criterion
from toolkit.errors import ConfigError


@dataclass
class LabelSmoothedCEConfig:
    _name: str = "label_smoothed_cross_entropy"
    label_smoothing: float = 0.1


def label_smoothed_nll_loss(lprobs: torch.Tensor, target: torch.Tensor, epsilon: float,
                            ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed smoothed loss and NLL over non-padding positions, from log-probabilities.

    The smoothed target puts ``1 - epsilon`` on the gold token and ``epsilon / (V - 1)`` on
    each other token: loss = (1 - eps - eps_i) * nll + eps_i * sum_v(-log p_v), eps_i = eps/(V-1).
    :func:`label_smoothed_cross_entropy` computes the same from logits, faster.

    :param lprobs: (N, V) log-probabilities.
    :param target: (N,) gold ids.
    """
    keep = target.ne(ignore_index)  # (N,)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (N,)
    smooth = -lprobs.sum(-1)  # (N,)
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    return loss.masked_select(keep).sum(), nll.masked_select(keep).sum()


class _SmoothedCrossEntropy(torch.autograd.Function):
    """Forward and backward of the smoothed loss over softmax(logits) in few passes.

    The vocabulary-wide passes dominate on a CPU, ``exp`` above all, so it runs once: the
    forward pass keeps the softmax and the backward pass turns it, in place, into the gradient
    with a scale, a shift and a scatter (d loss / d z_v = w * ((a + eps_i * V) * p_v - eps_i
    - a * [v = gold])). A second backward pass through the same graph is therefore refused.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = logits.float() if logits.element_size() < 4 else logits  # (N, V), at least float32
        vocab = z.size(-1)
        eps_i = epsilon / (vocab - 1)
        gold_weight = 1.0 - epsilon - eps_i
        probs = torch.softmax(z, dim=-1)  # (N, V)
        top_logit, top_index = z.max(dim=-1)  # (N,)
        # log-sum-exp from the most probable token, whose probability is >= 1/V
        lse = top_logit - probs.gather(-1, top_index[:, None]).squeeze(-1).log()  # (N,)
        nll = lse - z.gather(-1, target[:, None]).squeeze(-1)  # (N,)
        smooth = vocab * lse - z.sum(-1)  # (N,) sum_v -log p_v
        keep = target.ne(ignore_index).to(z.dtype)  # (N,)
        loss = ((gold_weight * nll + eps_i * smooth) * keep).sum()
        nll_sum = (nll * keep).sum()
        ctx.save_for_backward(probs, target, keep)
        ctx.probs_consumed = False
        ctx.coefficients = (gold_weight, eps_i, vocab)
        ctx.input_dtype = logits.dtype
        ctx.mark_non_differentiable(nll_sum)
        return loss, nll_sum

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_nll: torch.Tensor):
        if ctx.probs_consumed:
            raise RuntimeError("label_smoothed_cross_entropy supports one backward pass per forward pass")
        ctx.probs_consumed = True
        probs, target, keep = ctx.saved_tensors
        gold_weight, eps_i, vocab = ctx.coefficients
        weight = keep * grad_loss  # (N,)
        grad = probs.mul_(((gold_weight + eps_i * vocab) * weight)[:, None])  # (N, V), in place
        grad.sub_((eps_i * weight)[:, None])
        grad.scatter_add_(1, target[:, None], (-gold_weight * weight)[:, None])
        return grad.to(ctx.input_dtype), None, None, None


def label_smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                                 ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`label_smoothed_nll_loss` of ``log_softmax(logits)``, in float32 (or float64) for
    half-precision logits too. Only the first result (the loss) carries gradients.

    :param logits: (N, V) unnormalized scores.
    :param target: (N,) gold ids.
    """
    return _SmoothedCrossEntropy.apply(logits, target, epsilon, ignore_index)


class LabelSmoothedCrossEntropy(Criterion):
    """The smoothed loss over the softmax of the decoder's logits (``DecoderOutput.logits``)."""

    def __init__(self, cfg: LabelSmoothedCEConfig, padding_idx: int):
        super().__init__()
        if not 0.0 <= cfg.label_smoothing < 1.0:
            raise ConfigError(f"criterion.label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
        self.epsilon, self.padding_idx = cfg.label_smoothing, padding_idx

    def forward(self, model, sample: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, Any]]:
        logits = model(**sample["net_input"]).logits  # (B, T, V)
        loss, nll = label_smoothed_cross_entropy(logits.view(-1, logits.size(-1)), sample["target"].view(-1),
                                                 self.epsilon, self.padding_idx)
        ntokens = sample["ntokens"]
        return loss, ntokens, {"loss": loss.detach(), "nll_loss": nll.detach(), "ntokens": ntokens,
                               "nsentences": sample["nsentences"], "sample_size": ntokens}
