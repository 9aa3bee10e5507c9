"""Dropout whose CPU mask costs a quarter of the random draws of ``torch.nn.Dropout``.

On a CPU ``nn.Dropout`` draws one Bernoulli sample per element, which took about 7% of a
``transformer_small`` training step. Here each 64-bit draw yields four 16-bit numbers, and an
element is dropped when its number falls below ``round(p * 65536)``: the drop rate is ``p``
rounded to a multiple of 1/65536 and the survivors are scaled by exactly ``1 / (1 - rate)``,
so the expectation is unchanged. The draws come from torch's default generator, so seeding and
checkpointed RNG states cover them. Other devices use ``torch.nn.functional.dropout``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.errors import ConfigError

_LEVELS = 1 << 16  # 16-bit random numbers


def _keep_mask(shape: torch.Size, drop_levels: int, device: torch.device) -> torch.Tensor:
    """A bool mask of ``shape``, each element True with probability ``1 - drop_levels / 65536``."""
    numel = shape.numel()
    bits = torch.randint(-(2**63), 2**63 - 1, ((numel + 3) // 4,), dtype=torch.int64, device=device)
    bits = bits.view(torch.int16)[:numel].view(shape)  # uniform over [-32768, 32767]
    return bits >= drop_levels - _LEVELS // 2


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero each element of ``x`` with probability ``p`` (in training) and rescale the rest."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    drop_levels = round(p * _LEVELS)
    if drop_levels >= _LEVELS:
        return torch.zeros_like(x)
    keep = _keep_mask(x.shape, drop_levels, x.device)
    return _MaskedScale.apply(x, keep, _LEVELS / (_LEVELS - drop_levels))


class Dropout(nn.Module):
    """``nn.Dropout`` with the faster CPU mask of :func:`dropout`."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
