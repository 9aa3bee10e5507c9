"""The speed options compute what the default computes, within their precision."""

import pytest

from tests.training.test_train import config
from toolkit.training.train import train


def relative_gaps(a: list[float], b: list[float]) -> list[float]:
    assert len(a) == len(b)
    return [abs(x - y) / abs(y) for x, y in zip(a, b, strict=True)]


def test_bf16_autocast_follows_the_fp32_loss_curve(tmp_path):
    # same seed, same batches, same dropout masks: only the matmul precision differs
    fp32 = train(config(tmp_path / "fp32", "optimization.max_update=40"))["train_losses"]
    bf16 = train(config(tmp_path / "bf16", "optimization.max_update=40", "common.precision=bf16"))["train_losses"]
    assert max(relative_gaps(bf16, fp32)) < 0.03, relative_gaps(bf16, fp32)
    assert bf16[-1] < 0.8 * bf16[0]


@pytest.mark.timeout(900)
def test_compiled_model_trains_like_the_eager_one(tmp_path):
    # no dropout: compiled code draws its random numbers from another generator
    overrides = ["optimization.max_update=4", "model.dropout=0.0"]
    eager = train(config(tmp_path / "eager", *overrides))["train_losses"]
    compiled = train(config(tmp_path / "compiled", *overrides, "common.compile=true"))["train_losses"]
    assert max(relative_gaps(compiled, eager)) < 1e-3, (compiled, eager)
