"""The distillation term shared by criteria that learn a distribution (Hinton et al.): word-level
knowledge distillation from a teacher model (the distill plugin) and self-distillation of early
exits from a model's own last block (the depth_adaptive plugin)."""

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
