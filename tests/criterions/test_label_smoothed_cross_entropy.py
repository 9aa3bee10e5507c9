import math

import pytest
import torch

from toolkit.criterions.label_smoothed_cross_entropy import label_smoothed_cross_entropy, label_smoothed_nll_loss


def test_matches_a_hand_computation():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    target = torch.tensor([0, 2, 1])  # the last position is padding (index 1)
    eps = 0.1
    loss, nll = label_smoothed_nll_loss(probs.log(), target, eps, ignore_index=1)
    # target distribution: 1 - eps on gold, eps / (V - 1) = 0.05 on each other token
    expected = 0.0
    for row, gold in ((0, 0), (1, 2)):
        q = [eps / 2] * 3
        q[gold] = 1 - eps
        expected += -sum(q[v] * math.log(probs[row, v]) for v in range(3))
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert math.isclose(nll.item(), -math.log(0.7) - math.log(0.8), rel_tol=1e-6)


def test_no_smoothing_is_plain_nll():
    lprobs = torch.randn(5, 7).log_softmax(-1)
    target = torch.tensor([1, 2, 3, 4, 0])
    loss, nll = label_smoothed_nll_loss(lprobs, target, 0.0, ignore_index=-100)
    expected = torch.nn.functional.nll_loss(lprobs, target, reduction="sum")
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(nll, expected)


def test_fused_loss_and_gradient_equal_the_log_softmax_formula():
    torch.manual_seed(0)
    logits = (4 * torch.randn(12, 9, dtype=torch.float64)).requires_grad_()
    target = torch.randint(0, 9, (12,))
    target[[3, 7]] = 1  # padding
    upstream = 0.37
    expected_loss, expected_nll = label_smoothed_nll_loss(logits.log_softmax(-1), target, 0.1, ignore_index=1)
    (expected_grad,) = torch.autograd.grad(upstream * expected_loss, logits)
    loss, nll = label_smoothed_cross_entropy(logits, target, 0.1, ignore_index=1)
    (grad,) = torch.autograd.grad(upstream * loss, logits)
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(nll, expected_nll)
    torch.testing.assert_close(grad, expected_grad)
    assert grad[[3, 7]].abs().max() == 0  # padding rows get no gradient
    assert not nll.requires_grad


def test_fused_loss_keeps_float32_for_low_precision_logits():
    logits = torch.randn(6, 11).to(torch.bfloat16).requires_grad_()
    target = torch.randint(0, 11, (6,))
    loss, _ = label_smoothed_cross_entropy(logits, target, 0.1, ignore_index=-100)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    expected, _ = label_smoothed_nll_loss(logits.float().log_softmax(-1), target, 0.1, ignore_index=-100)
    torch.testing.assert_close(loss, expected)


def test_fused_loss_refuses_a_second_backward_pass():
    logits = torch.randn(4, 5, requires_grad=True)
    loss, _ = label_smoothed_cross_entropy(logits, torch.tensor([0, 1, 2, 3]), 0.1, ignore_index=-100)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()
