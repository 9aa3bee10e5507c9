"""The criterion interface: a loss over a batch plus the numbers to log."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class Criterion(nn.Module):
    """``forward(model, sample) -> (loss, sample_size, logging_output)``.

    ``loss`` is summed over the batch; the trainer divides gradients by the summed
    ``sample_size`` of all accumulated batches. Logging values are sums (tensors or numbers)
    that ``reduce_metrics`` turns into per-token averages.
    """

    def forward(self, model: nn.Module, sample: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, Any]]:
        raise NotImplementedError

    @staticmethod
    def reduce_metrics(totals: dict[str, float]) -> dict[str, float]:
        """Summed logging outputs -> reported metrics (``loss``, ``nll_loss``, ``ppl`` in nats)."""
        ntokens = max(totals.get("ntokens", 0), 1)
        metrics = {"loss": totals.get("loss", 0.0) / ntokens}
        if "nll_loss" in totals:
            metrics["nll_loss"] = totals["nll_loss"] / ntokens
            metrics["ppl"] = math.exp(min(metrics["nll_loss"], 100.0))
        return metrics
