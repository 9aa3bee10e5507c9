"""Quantization noise in training: random blocks of a weight take the value the target scheme
would give them, with straight-through gradients; the stored weights are never changed."""

from __future__ import annotations

import re
import types

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.errors import ConfigError

from quant_noise.int8 import fake_int8


def block_mask(weight: torch.Tensor, rate: float, block_size: int, generator: torch.Generator | None = None
               ) -> torch.Tensor:
    """(rows, cols) bool, True on the weights of the noised blocks: each block of ``block_size``
    consecutive weights of a row is chosen with probability ``rate``."""
    rows, cols = weight.shape
    draws = torch.rand(rows, cols // block_size, generator=generator, device=weight.device)  # (rows, cols/b)
    return (draws < rate).repeat_interleave(block_size, dim=1)


def noised(weight: torch.Tensor, rate: float, block_size: int, scheme: str,
           generator: torch.Generator | None = None, straight_through: bool = True) -> torch.Tensor:
    """The weight as this step sees it: chosen blocks dropped (iPQ, the others rescaled by
    1/(1-rate)) or replaced by their int8 value. ``straight_through``: the gradient passes to every
    weight of ``weight`` unchanged (the paper); otherwise it follows the computation as written
    (fairseq's iPQ noise: a noised block gets none, the others theirs scaled by 1/(1-rate))."""
    mask = block_mask(weight, rate, block_size, generator)  # (rows, cols)
    if scheme == "ipq":
        target = weight.masked_fill(mask, 0.0) / (1.0 - rate)
    else:
        target = torch.where(mask, fake_int8(weight).detach(), weight)
    return weight + (target - weight).detach() if straight_through else target


def check_block_size(name: str, width: int, block_size: int) -> None:
    if width % block_size:
        raise ConfigError(f"quant_noise: block size {block_size} does not divide the width {width} of {name}")


def attach_noise(model: nn.Module, rates: dict[type, tuple[float, int]], scheme: str, modules: str = "",
                 straight_through: bool = True) -> list[str]:
    """Make every ``nn.Linear`` and ``nn.Embedding`` of the model (those whose name the regular
    expression ``modules`` finds, if given) compute with a noised weight in training mode
    (``rates[kind] = (rate, block size)``; rate 0 leaves a kind alone). Returns the names of
    the modules changed; their state-dict keys do not change. ``straight_through``: see ``noised``."""
    changed = []
    for name, module in model.named_modules():
        kind = nn.Embedding if isinstance(module, nn.Embedding) else nn.Linear if isinstance(module, nn.Linear) else None
        if kind is None or rates[kind][0] <= 0 or not re.search(modules, name):
            continue
        rate, block_size = rates[kind]
        check_block_size(name, module.weight.size(1), block_size)
        module.noise = (rate, block_size, scheme, straight_through)
        module.forward = types.MethodType(_noisy_embedding if kind is nn.Embedding else _noisy_linear, module)
        changed.append(name)
    if modules and not changed and any(rate > 0 for rate, _ in rates.values()):
        raise ConfigError(f"plugins.options.quant_noise.modules={modules!r} matches no Linear or Embedding "
                          f"with a noise rate")
    return changed


def _weight(module: nn.Module) -> torch.Tensor:
    if not module.training:
        return module.weight
    rate, block_size, scheme, straight_through = module.noise
    return noised(module.weight, rate, block_size, scheme, straight_through=straight_through)


def _noisy_linear(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, _weight(self), self.bias)


def _noisy_embedding(self: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    return F.embedding(tokens, _weight(self), self.padding_idx, self.max_norm, self.norm_type,
                       self.scale_grad_by_freq, self.sparse)
