"""Optimizers are ``torch.optim.Optimizer`` subclasses built from a typed config."""

from torch.optim import Optimizer

__all__ = ["Optimizer"]
