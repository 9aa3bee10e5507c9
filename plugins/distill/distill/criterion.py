"""Word-level knowledge distillation (Hinton et al.; Kim and Rush): label-smoothed cross-entropy
mixed with the KL divergence from the teacher's distribution at temperature T."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from toolkit.criterions.base import Criterion
from toolkit.criterions.distillation import distillation_loss
from toolkit.criterions.label_smoothed_cross_entropy import label_smoothed_cross_entropy
from toolkit.errors import ConfigError


@dataclass
class WordDistillConfig:
    _name: str = "word_distill"
    teacher: str = "???"  # the teacher's checkpoint, or several joined by ":" (an ensemble); same target vocabulary as the student's
    alpha: float = 0.5  # weight of the distillation term; 1 - alpha on the label-smoothed loss
    temperature: float = 1.0  # T, applied to both distributions; the term is scaled by T^2
    label_smoothing: float = 0.1


class WordDistillCriterion(Criterion):
    """(1 - alpha) * label-smoothed CE + alpha * T^2 * KL(teacher || student), summed over tokens.

    The teacher is set by the plugin at the start of training (``toolkit_train_begin``: loaded
    once on the trainer's device, frozen, in eval mode) and runs under ``no_grad`` inside each
    step, validation included. It is kept out of the criterion's modules (and state dict).
    """

    def __init__(self, cfg: WordDistillConfig, padding_idx: int):
        super().__init__()
        if not 0.0 <= cfg.alpha <= 1.0:
            raise ConfigError(f"criterion.alpha must be in [0, 1], got {cfg.alpha}")
        if cfg.temperature <= 0:
            raise ConfigError(f"criterion.temperature must be > 0, got {cfg.temperature}")
        if not 0.0 <= cfg.label_smoothing < 1.0:
            raise ConfigError(f"criterion.label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
        self.cfg, self.padding_idx = cfg, padding_idx
        self._teacher: list[torch.nn.Module] = []  # a list: not registered as a submodule

    @property
    def teacher(self) -> torch.nn.Module:
        if not self._teacher:
            raise RuntimeError("word_distill has no teacher: the distill plugin loads it when training begins")
        return self._teacher[0]

    def set_teacher(self, teacher: torch.nn.Module) -> None:
        self._teacher[:] = [teacher]

    def forward(self, model, sample: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, Any]]:
        with torch.no_grad():
            teacher_logits = self.teacher(**sample["net_input"]).logits  # (B, T, V)
        logits = model(**sample["net_input"]).logits  # (B, T, V)
        flat, target = logits.view(-1, logits.size(-1)), sample["target"].view(-1)
        smoothed, nll = label_smoothed_cross_entropy(flat, target, self.cfg.label_smoothing, self.padding_idx)
        distill = distillation_loss(flat, teacher_logits.view(-1, logits.size(-1)), target, self.cfg.temperature,
                                    self.padding_idx)
        loss = (1.0 - self.cfg.alpha) * smoothed + self.cfg.alpha * distill
        ntokens = sample["ntokens"]
        return loss, ntokens, {"loss": loss.detach(), "nll_loss": nll.detach(), "distill_loss": distill.detach(),
                               "ntokens": ntokens, "nsentences": sample["nsentences"], "sample_size": ntokens}

    @staticmethod
    def reduce_metrics(totals: dict[str, float]) -> dict[str, float]:
        metrics = Criterion.reduce_metrics(totals)
        if "distill_loss" in totals:
            metrics["distill_loss"] = totals["distill_loss"] / max(totals.get("ntokens", 0), 1)
        return metrics
