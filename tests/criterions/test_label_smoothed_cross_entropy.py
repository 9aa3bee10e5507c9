import math

import torch

from toolkit.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss


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
