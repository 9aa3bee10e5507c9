"""Learning-rate schedules, stepped after every update: ``step_update(num_updates) -> lr``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class LRScheduler:
    """Sets every param group's lr from the update count; the peak is the optimizer's lr."""

    def __init__(self, cfg, optimizer: torch.optim.Optimizer):
        self.cfg, self.optimizer = cfg, optimizer
        self.peak_lr = optimizer.param_groups[0]["lr"]
        self.step_update(0)

    def lr_at(self, num_updates: int) -> float:
        raise NotImplementedError

    def step_update(self, num_updates: int) -> float:
        lr = self.lr_at(num_updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"peak_lr": self.peak_lr}

    def load_state_dict(self, state: dict) -> None:
        self.peak_lr = state["peak_lr"]


def _warmup(peak: float, init: float, warmup: int, num_updates: int) -> float:
    return init + (peak - init) * num_updates / warmup


@dataclass
class InverseSqrtConfig:
    _name: str = "inverse_sqrt"
    warmup_updates: int = 4000
    warmup_init_lr: float = 0.0


class InverseSqrtSchedule(LRScheduler):
    """Linear warmup to the peak, then decay proportional to 1/sqrt(update) (Vaswani et al.)."""

    def lr_at(self, num_updates: int) -> float:
        warmup = self.cfg.warmup_updates
        if num_updates < warmup:
            return _warmup(self.peak_lr, self.cfg.warmup_init_lr, warmup, num_updates)
        return self.peak_lr * math.sqrt(max(warmup, 1) / max(num_updates, 1))


@dataclass
class FixedConfig:
    _name: str = "fixed"
    warmup_updates: int = 0


class FixedSchedule(LRScheduler):
    """Linear warmup from 0, then the optimizer's lr."""

    def lr_at(self, num_updates: int) -> float:
        if num_updates < self.cfg.warmup_updates:
            return _warmup(self.peak_lr, 0.0, self.cfg.warmup_updates, num_updates)
        return self.peak_lr


@dataclass
class CosineConfig:
    _name: str = "cosine"
    warmup_updates: int = 1000
    max_update: int = 100000  # the update at which the lr reaches min_lr
    min_lr: float = 0.0


class CosineSchedule(LRScheduler):
    """Linear warmup, then half a cosine down to ``min_lr`` at ``max_update``."""

    def lr_at(self, num_updates: int) -> float:
        warmup, total = self.cfg.warmup_updates, self.cfg.max_update
        if num_updates < warmup:
            return _warmup(self.peak_lr, 0.0, warmup, num_updates)
        progress = min(1.0, (num_updates - warmup) / max(1, total - warmup))
        return self.cfg.min_lr + 0.5 * (self.peak_lr - self.cfg.min_lr) * (1 + math.cos(math.pi * progress))
