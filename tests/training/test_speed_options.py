"""The speed options compute what the default computes, within their precision."""

import pytest

from tests.training.test_train import config
from toolkit.training.train import train


def relative_gaps(a: list[float], b: list[float]) -> list[float]:
    assert len(a) == len(b)
    return [abs(x - y) / abs(y) for x, y in zip(a, b, strict=True)]


def test_bf16_autocast_follows_the_fp32_loss_curve(tiny_bf16, tiny_three_epochs):
    # same seed, same batches, same dropout masks: only the matmul precision differs. The fp32
    # curve is the first 40 updates of the shared fp32 run of the same config (3 epochs): a run's
    # updates do not depend on where it will stop (test_resumed_run_continues_the_same_curve_bitwise)
    bf16 = tiny_bf16.result["train_losses"]  # optimization.max_update=40 common.precision=bf16
    fp32 = tiny_three_epochs.result["train_losses"][: len(bf16)]
    assert len(bf16) == len(fp32) == 40
    assert max(relative_gaps(bf16, fp32)) < 0.03, relative_gaps(bf16, fp32)
    assert bf16[-1] < 0.8 * bf16[0]


@pytest.mark.timeout(900)
def test_compiled_model_trains_like_the_eager_one(tmp_path, tiny_data):
    # no dropout: compiled code draws its random numbers from another generator
    overrides = ["optimization.max_update=4", "model.dropout=0.0", tiny_data]
    eager = train(config(tmp_path / "eager", *overrides))["train_losses"]
    compiled = train(config(tmp_path / "compiled", *overrides, "common.compile=true"))["train_losses"]
    assert max(relative_gaps(compiled, eager)) < 1e-3, (compiled, eager)
