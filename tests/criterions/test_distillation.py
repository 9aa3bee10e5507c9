"""The distillation terms shared by criteria: KL at a temperature, and the smoothed loss mixed
with the KL as one cross-entropy."""

from __future__ import annotations

import pytest
import torch

from toolkit.criterions.distillation import distillation_loss, smoothed_and_distilled
from toolkit.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

PAD = 1


def _rows(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(7, 11, generator=generator, dtype=torch.float64)  # (N, V)
    teacher = torch.log_softmax(torch.randn(7, 11, generator=generator, dtype=torch.float64), dim=-1)  # (N, V)
    target = torch.randint(2, 11, (7,), generator=generator)
    target[3] = PAD
    weight = torch.tensor([0.0, 0.5, 1.0, 0.5, 0.25, 0.0, 0.75], dtype=torch.float64)
    return logits, teacher, target, weight


def test_the_mixture_equals_each_row_s_smoothed_loss_and_kl_mixed():
    logits, teacher, target, weight = _rows()
    loss, nll, kl = smoothed_and_distilled(logits, target, teacher, weight, 0.1, PAD)
    expected = expected_kl = 0.0
    for row in range(len(target)):
        if target[row] == PAD:
            continue
        lprobs = torch.log_softmax(logits[row:row + 1], dim=-1)
        smoothed = label_smoothed_nll_loss(lprobs, target[row:row + 1], 0.1, PAD)[0]
        row_kl = distillation_loss(logits[row:row + 1], teacher[row:row + 1], target[row:row + 1], 1.0, PAD)
        expected = expected + (1 - weight[row]) * smoothed + weight[row] * row_kl
        expected_kl = expected_kl + (row_kl if weight[row] > 0 else 0.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)  # distillation_loss works in float32
    assert kl.item() == pytest.approx(float(expected_kl), rel=1e-6)
    keep = target.ne(PAD)
    assert nll.item() == pytest.approx(label_smoothed_nll_loss(torch.log_softmax(logits, -1), target, 0.0, PAD)[1].item())
    assert weight[keep].gt(0).any() and weight[keep].eq(0).any()  # both kinds of rows were checked


def test_its_gradient_is_the_softmax_less_the_mixed_target():
    logits, teacher, target, weight = _rows(seed=1)
    logits.requires_grad_(True)
    smoothed_and_distilled(logits, target, teacher, weight, 0.1, PAD)[0].backward()
    vocab, eps = logits.size(-1), 0.1
    smoothed_target = torch.full_like(logits, eps / (vocab - 1))
    smoothed_target.scatter_(1, target[:, None], 1 - eps)
    mixture = (1 - weight[:, None]) * smoothed_target + weight[:, None] * teacher.exp()
    expected = (torch.softmax(logits.detach(), -1) - mixture) * target.ne(PAD)[:, None]
    assert torch.allclose(logits.grad, expected, atol=1e-12)
