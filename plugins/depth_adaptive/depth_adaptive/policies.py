"""Per-token exit policies for the core's block-by-block decoding step.

Each is a registered ``exit_policy`` (``toolkit-generate generation/exit_policy=NAME``), asked
after every decoder block but the last which hypotheses stop there:

- ``confidence``: the block's most probable token has probability >= T_n (Elbayad et al.);
- ``entropy``: the entropy of the block's distribution is below T_n, in nats (DeeBERT);
- ``patience``: the block's most probable token is the same as at the ``patience`` blocks
  before it (PABEE).

A threshold is one number for every block or a list with one per block 1..N-1. A threshold
that no distribution can meet (confidence above 1, entropy at or below 0) switches the check at
that block off: its distribution is then not computed, which saves a vocabulary projection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from toolkit.generation.exit_policy import ExitPolicy, ExitStep
from toolkit.errors import ConfigError

from depth_adaptive.tuning import read_tuned


@dataclass
class ConfidenceConfig:
    _name: str = "confidence"
    threshold: float = 0.9  # every block's T_n, unless thresholds is set
    thresholds: list[float] = field(default_factory=list)  # T_1..T_{N-1}
    tuned: Optional[str] = None  # a toolkit-tune-exits file: its thresholds replace the above


@dataclass
class EntropyConfig:
    _name: str = "entropy"
    threshold: float = 0.5  # nats
    thresholds: list[float] = field(default_factory=list)
    tuned: Optional[str] = None


@dataclass
class PatienceConfig:
    _name: str = "patience"
    patience: int = 2  # consecutive blocks whose prediction agrees with this block's


def per_block_thresholds(cfg, model) -> list[float]:
    """T_1..T_{N-1} from a config's ``tuned`` file or ``threshold``/``thresholds``, checked
    against the depth."""
    exits = len(model.decoder.layers) - 1
    if cfg.tuned:
        values = list(read_tuned(cfg.tuned, cfg._name, model)["thresholds"])
    else:
        values = list(cfg.thresholds) if cfg.thresholds else [cfg.threshold] * exits
    if len(values) != exits:
        raise ConfigError(f"exit_policy.thresholds needs {exits} values (blocks 1..{exits} of this "
                         f"{exits + 1}-block decoder), got {len(values)}: {values}")
    return values


class ConfidenceExit(ExitPolicy):
    """Exit when max_v p_n(v) >= T_n; the block's logits then score the hypothesis."""

    def __init__(self, cfg: ConfidenceConfig, model):
        self.thresholds = per_block_thresholds(cfg, model)

    def should_exit(self, block: int, hidden: torch.Tensor, decoder) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.thresholds[block] > 1.0:  # off: no probability reaches it
            return torch.zeros(hidden.size(0), dtype=torch.bool, device=hidden.device)
        logits = decoder.project(hidden, block)  # (N, V)
        confidence = torch.softmax(logits.float(), dim=-1).amax(dim=-1)  # (N,)
        return confidence >= self.thresholds[block], logits


class EntropyExit(ExitPolicy):
    """Exit when H(p_n) < T_n (DeeBERT)."""

    def __init__(self, cfg: EntropyConfig, model):
        self.thresholds = per_block_thresholds(cfg, model)

    def should_exit(self, block: int, hidden: torch.Tensor, decoder) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.thresholds[block] <= 0.0:  # off: no entropy is below it
            return torch.zeros(hidden.size(0), dtype=torch.bool, device=hidden.device)
        logits = decoder.project(hidden, block)  # (N, V)
        lprobs = torch.log_softmax(logits.float(), dim=-1)
        entropy = -(lprobs.exp() * lprobs).sum(dim=-1)  # (N,)
        return entropy < self.thresholds[block], logits


class PatienceExit(ExitPolicy):
    """Exit when the argmax has not changed for ``patience`` consecutive blocks (PABEE)."""

    def __init__(self, cfg: PatienceConfig, model):
        blocks = len(model.decoder.layers)
        if not 1 <= cfg.patience < blocks:
            raise ConfigError(f"exit_policy.patience must be in 1..{blocks - 1} for this {blocks}-block decoder, "
                             f"got {cfg.patience}")
        self.patience = cfg.patience
        self.previous: torch.Tensor | None = None  # (N,) argmax of the running rows at the last block
        self.agreeing: torch.Tensor | None = None  # (N,) consecutive agreements so far

    def begin_step(self, step: ExitStep) -> None:
        self.previous = self.agreeing = None

    def should_exit(self, block: int, hidden: torch.Tensor, decoder) -> tuple[torch.Tensor, torch.Tensor]:
        logits = decoder.project(hidden, block)  # (N, V)
        prediction = logits.argmax(dim=-1)  # (N,)
        if self.previous is None:
            agreeing = torch.zeros_like(prediction)
        else:
            agreeing = torch.where(prediction == self.previous, self.agreeing + 1, 0)
        exits = agreeing >= self.patience
        self.previous, self.agreeing = prediction[~exits], agreeing[~exits]  # the rows that go on
        return exits, logits


@dataclass
class HaltingConfig:
    _name: str = "halting"
    threshold: float = 0.5  # token_geometric: exit after block n when chi^n >= threshold
    tuned: Optional[str] = None  # a toolkit-tune-exits file: its threshold replaces the above


class HaltingExit(ExitPolicy):
    """The model's learnt halting classifier decides: the most likely exit of q(n|x) (sequence,
    planned once per sentence and kept with the hypotheses), of q_t(n) (token multinomial,
    planned at block 1 of each step), or chi_t^n >= threshold (geometric)."""

    PLAN = "depth_adaptive.sequence_exit"  # the key of the sequence plan in ``state.hypotheses``

    def __init__(self, cfg: HaltingConfig, model):
        self.halting = getattr(model, "halting", None)
        if self.halting is None:
            raise ConfigError("exit_policy=halting needs a model trained with a halting classifier "
                             "(plugins.options.depth_adaptive.halting); this checkpoint has none")
        threshold = read_tuned(cfg.tuned, cfg._name, model)["threshold"] if cfg.tuned else cfg.threshold
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"exit_policy.threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.planned: torch.Tensor | None = None  # (N,) 0-based exit block of every row of this step

    def begin_step(self, step: ExitStep) -> None:
        self.planned = None
        if self.halting.kind == "sequence":
            plans = step.state.hypotheses
            if self.PLAN not in plans:  # the first step: one plan per sentence, reordered with its beams
                plans[self.PLAN] = self.halting.sequence_log_q(step.encoder_out).argmax(-1)
            self.planned = plans[self.PLAN]

    def decide(self, block: int, hidden: torch.Tensor, decoder, step: ExitStep) -> torch.Tensor:
        if self.halting.kind == "token_geometric":
            return torch.sigmoid(self.halting.chi_logit(hidden, block)) >= self.threshold
        if self.planned is None:  # token_multinomial, first block: every row is running
            self.planned = self.halting.multinomial_log_q(hidden).argmax(-1)
        return self.planned.index_select(0, step.rows) == block
