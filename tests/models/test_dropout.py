import pytest
import torch

from toolkit.models.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.3])
def test_drops_at_the_requested_rate_and_keeps_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    y = dropout(x, p, training=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.002  # binomial std over 1e6 elements is < 0.0005
    assert abs(y.mean().item() - 1.0) < 0.005
    survivors = y[y != 0]
    torch.testing.assert_close(survivors, torch.full_like(survivors, survivors[0].item()))
    assert survivors[0].item() == pytest.approx(1 / (1 - p), rel=1e-4)


def test_each_16_bit_lane_is_uniform():
    torch.manual_seed(0)
    y = dropout(torch.ones(4, 250_000), 0.5, training=True)
    # elements 4k+j come from lane j of the 64-bit draws; every lane must drop about half
    lanes = (y == 0).float().view(-1, 4).mean(0)
    torch.testing.assert_close(lanes, torch.full((4,), 0.5), atol=0.005, rtol=0)


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    y.backward(torch.ones_like(y))
    expected = torch.where(y != 0, 1 / 0.75, 0.0)
    torch.testing.assert_close(x.grad, expected)


def test_seeded_draws_repeat_and_eval_is_identity():
    x = torch.randn(8, 16)
    torch.manual_seed(3)
    a = dropout(x, 0.2, training=True)
    torch.manual_seed(3)
    b = dropout(x, 0.2, training=True)
    assert torch.equal(a, b)
    module = Dropout(0.2).eval()
    assert module(x) is x
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)
