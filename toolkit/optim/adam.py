"""Adam with decoupled weight decay (AdamW) or L2-coupled weight decay."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch

from toolkit.errors import ConfigError


@dataclass
class AdamConfig:
    _name: str = "adam"
    lr: float = 5e-4  # peak learning rate; schedulers scale it
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = True  # AdamW; false: L2 penalty added to the gradient
    fused: Optional[bool] = None  # None: fused on GPUs, torch's default (foreach) elsewhere


class Adam(torch.optim.Adam):
    @classmethod
    def from_config(cls, cfg: AdamConfig, params: Iterable[torch.nn.Parameter]) -> "Adam":
        if cfg.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {cfg.lr}")
        if len(cfg.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.betas):
            raise ConfigError(f"optim.betas must be two values in [0, 1), got {cfg.betas}")
        params = list(params)
        fused = cfg.fused
        if fused is None and params and all(isinstance(p, torch.Tensor) and p.is_cuda for p in params):
            fused = True  # one kernel for all parameters (they are on their device by now)
        return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                   decoupled_weight_decay=cfg.decoupled_weight_decay, fused=fused)
