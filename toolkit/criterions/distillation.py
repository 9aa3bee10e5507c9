"""Distillation terms for criteria that learn a teacher's distribution (Hinton et al.): the
teacher may be another model (word-level knowledge distillation) or a part of the same model
(self-distillation, e.g. early exits learning from the last block)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                      temperature: float, ignore_index: int) -> torch.Tensor:
    """T^2 * sum over non-padding positions of KL(p_teacher^T || p_student^T).

    The teacher's logits get no gradient (pass them detached or computed under ``no_grad``).

    :param student_logits: (N, V); :param teacher_logits: (N, V); :param target: (N,) ids,
        ``ignore_index`` where a position does not count.
    """
    keep = target.ne(ignore_index)  # (N,)
    student = F.log_softmax(student_logits[keep].float() / temperature, dim=-1)  # (K, V)
    teacher = F.log_softmax(teacher_logits[keep].float() / temperature, dim=-1)  # (K, V)
    kl = (teacher.exp() * (teacher - student)).sum()
    return temperature**2 * kl


def smoothed_and_distilled(logits: torch.Tensor, target: torch.Tensor, teacher_log_probs: torch.Tensor,
                           weight: torch.Tensor | float, epsilon: float,
                           ignore_index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum over non-padding rows of (1 - w) label-smoothed CE + w KL(teacher || softmax(logits)).

    Both terms are cross-entropies against a target distribution (the smoothed one-hot and the
    teacher's), so the row's loss is one cross-entropy against their mixture, less the constant
    w H(teacher), and its gradient is softmax(logits) - mixture. At temperature 1.

    :param logits: (N, V) the student's; :param target: (N,) gold ids, ``ignore_index`` where a
        row does not count; :param teacher_log_probs: (N, V) without gradient; :param weight:
        w in [0, 1], one for every row or (N,) one per row.
    :return: the summed loss, the summed NLL of the gold ids and the summed KL over rows with w > 0.
    """
    z = logits.float() if logits.element_size() < 4 else logits  # (N, V), at least float32
    vocab = z.size(-1)
    eps_i = epsilon / (vocab - 1)
    lse = torch.logsumexp(z, dim=-1)  # (N,)
    nll = lse - z.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (N,)
    smoothed = (1.0 - epsilon - eps_i) * nll + eps_i * (vocab * lse - z.sum(-1))  # (N,)
    teacher = teacher_log_probs.to(z.dtype)
    probs = teacher.exp()  # (N, V)
    entropy = -(probs * teacher).sum(-1)  # (N,)
    kl = lse - (probs * z).sum(-1) - entropy  # (N,) CE(teacher, student) - H(teacher)
    keep = target.ne(ignore_index)  # (N,)
    weight = torch.as_tensor(weight, dtype=z.dtype, device=z.device).expand_as(nll)  # (N,)
    loss = ((1.0 - weight) * smoothed + weight * kl).masked_select(keep).sum()
    return loss, nll.detach().masked_select(keep).sum(), kl.detach().masked_select(keep & weight.gt(0)).sum()
