"""Multi-exit training: the ``depth_adaptive`` criterion (aligned and mixed, Elbayad et al. §3.1).

- **aligned**: every block n = 1..N predicts every token; L_dec = -(1/Σω) Σ_n ω_n LL^n, LL^n the
  (label-smoothed) log-likelihood from block n's classifier.
- **mixed**: M exit sequences (n_1..n_|y|) are sampled per sentence, uniformly over 1..N; token t
  is predicted from block n_t, and its state is copied to the blocks above (they return their
  input for it), so later tokens attend to the copied state exactly as at inference. The M
  copies of the batch go through one forward of the model (DDP synchronises it as any batch);
  L_dec averages the M sequence log-likelihoods.

In eval mode (validation) both report the aligned loss, which is deterministic.

**Self-distillation** (``exit_distill_weight`` beta > 0; Phuong and Lampert, *Distillation-Based
Training for Multi-Exit Architectures*, ICCV 2019): a token predicted below the last block learns
(1 - beta) times its smoothed loss plus beta times KL(p_N || p_n), the last block's distribution
detached, so the low exits learn what the full depth predicts rather than the data alone. Aligned
training takes p_N from the same forward; mixed training from one more forward of the batch at
full depth, without gradients. From the first update, the exits learn the untrained last block's
flat distribution and the whole model slows down (README); ``exit_distill_start`` switches it on
later (the plugin's train-step hook tells the criterion the update number).

With a halting classifier on the model (``plugins.options.depth_adaptive.halting``), aligned
training adds alpha L_exit, L_exit = sum_t H(q*_t, q_t): the cross-entropy of the halting
distribution against the oracle's exit (``depth_adaptive.oracles``). The classifier reads the
states detached: it learns when to stop without changing what the blocks compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from toolkit.criterions.base import Criterion
from toolkit.criterions.distillation import smoothed_and_distilled
from toolkit.criterions.label_smoothed_cross_entropy import label_smoothed_cross_entropy
from toolkit.errors import ConfigError

from depth_adaptive.oracles import ORACLES, sequence_oracle, token_oracle

MODES = ("aligned", "mixed")


@dataclass
class DepthAdaptiveCriterionConfig:
    _name: str = "depth_adaptive"
    label_smoothing: float = 0.1
    mode: str = "aligned"  # aligned | mixed
    block_weights: list[float] = field(default_factory=list)  # omega_1..omega_N (aligned); empty: uniform
    samples: int = 3  # M: exit sequences sampled per sentence (mixed)
    halting_weight: float = 1.0  # alpha: weight of the halting loss (when the model has a halting classifier)
    oracle: str = "likelihood"  # likelihood | correctness
    oracle_lambda: float = 0.0  # lambda: the oracle's penalty per block of depth
    oracle_sigma: float = 1.0  # sigma of the token oracle's smoothing kernel exp(-|t-t'|^2/sigma); 0: none
    exit_distill_weight: float = 0.0  # beta: weight of KL(last block || exit block) for exits below the last; 0: off
    exit_distill_start: int = 0  # the update from which self-distillation counts (before it beta is 0)


class DepthAdaptiveCriterion(Criterion):
    """Aligned or mixed multi-exit loss; logs each block's NLL (``nll_block{n}``)."""

    def __init__(self, cfg: DepthAdaptiveCriterionConfig, padding_idx: int):
        super().__init__()
        if cfg.mode not in MODES:
            raise ConfigError(f"criterion.mode must be one of {MODES}, got {cfg.mode!r}")
        if not 0.0 <= cfg.label_smoothing < 1.0:
            raise ConfigError(f"criterion.label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
        if cfg.oracle not in ORACLES:
            raise ConfigError(f"criterion.oracle must be one of {ORACLES}, got {cfg.oracle!r}")
        if cfg.samples < 1:
            raise ConfigError(f"criterion.samples must be >= 1, got {cfg.samples}")
        if any(w < 0 for w in cfg.block_weights) or (cfg.block_weights and sum(cfg.block_weights) <= 0):
            raise ConfigError(f"criterion.block_weights must be >= 0 with a positive sum, got {cfg.block_weights}")
        if not 0.0 <= cfg.exit_distill_weight <= 1.0:
            raise ConfigError(f"criterion.exit_distill_weight must be in [0, 1], got {cfg.exit_distill_weight}")
        if cfg.exit_distill_start < 0:
            raise ConfigError(f"criterion.exit_distill_start must be >= 0, got {cfg.exit_distill_start}")
        self.cfg, self.padding_idx = cfg, padding_idx
        self.num_updates = 0  # set by the plugin's train-step hook before each forward

    @property
    def exit_distill_weight(self) -> float:
        """beta now: ``exit_distill_weight`` from update ``exit_distill_start`` on, 0 before."""
        return self.cfg.exit_distill_weight if self.num_updates >= self.cfg.exit_distill_start else 0.0

    def forward(self, model: nn.Module, sample: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, Any]]:
        if self.cfg.mode == "mixed" and self.training:
            return self.mixed(model, sample)
        return self.aligned(model, sample)

    def block_weights(self, blocks: int) -> list[float]:
        """omega_1..omega_N; uniform unless set (then it must have one weight per block)."""
        weights = list(self.cfg.block_weights) or [1.0] * blocks
        if len(weights) != blocks:
            raise ConfigError(f"criterion.block_weights has {len(weights)} weights for a {blocks}-block decoder")
        return weights

    def aligned(self, model: nn.Module, sample: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, Any]]:
        """The omega-weighted mean of every block's smoothed loss (plus alpha L_exit with halting)."""
        out = model(**sample["net_input"], return_all_hiddens=True)
        blocks = len(out.hidden_states)
        weights = self.block_weights(blocks)
        target = sample["target"]  # (B, T)
        halting = getattr(model, "halting", None)
        total, logging_output, scores = 0.0, {}, []
        beta, distilled = self.exit_distill_weight, 0.0
        if beta > 0:  # the self-distillation teacher: the last block, detached
            teacher = torch.log_softmax(out.logits.detach().float(), dim=-1).view(-1, out.logits.size(-1))  # (B*T, V)
        for n, hidden in enumerate(out.hidden_states):  # hidden: (B, T, C)
            logits = out.logits if n == blocks - 1 else model.decoder.project(hidden, n)  # (B, T, V)
            flat = logits.view(-1, logits.size(-1))
            if n < blocks - 1 and beta > 0:
                loss, nll, kl = smoothed_and_distilled(flat, target.view(-1), teacher, beta,
                                                       self.cfg.label_smoothing, self.padding_idx)
                distilled = distilled + kl
            else:
                loss, nll = label_smoothed_cross_entropy(flat, target.view(-1), self.cfg.label_smoothing,
                                                         self.padding_idx)
            total = total + weights[n] * loss
            logging_output[f"nll_block{n + 1}"] = nll.detach()
            if halting is not None:
                scores.append(self._token_score(logits.detach(), target))
        loss = total / sum(weights)
        if beta > 0 and blocks > 1:
            logging_output["exit_distill"] = distilled / (blocks - 1)  # KL summed over tokens, mean over exits
        if halting is not None and self.training:
            exit_loss, oracle_exit = self.halting_loss(halting, out, torch.stack(scores, dim=-1), target)
            loss = loss + self.cfg.halting_weight * exit_loss
            logging_output.update(exit_loss=exit_loss.detach(), oracle_exit=oracle_exit)
        return loss, sample["ntokens"], self._logging(loss, logging_output[f"nll_block{blocks}"], sample,
                                                      logging_output)

    def _token_score(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, T) the oracle's score of one block: gold log-probability, or 1 if its argmax is gold."""
        if self.cfg.oracle == "likelihood":
            return torch.log_softmax(logits.float(), dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return logits.argmax(-1).eq(target).float()

    def halting_loss(self, halting: nn.Module, out, scores: torch.Tensor,
                     target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_exit summed, summed 1-based oracle exits) for scores (B, T, N) of every block."""
        keep = target.ne(self.padding_idx)  # (B, T)
        hidden = [h.detach() for h in out.hidden_states]
        encoder_out = type(out.encoder_out)(out.encoder_out.states.detach(), out.encoder_out.padding_mask)
        log_q = halting.distribution(encoder_out, hidden)  # (B, N) or (B, T, N)
        if halting.kind == "sequence":
            best = sequence_oracle(scores, keep, self.cfg.oracle_lambda)  # (B,)
            chosen = -log_q.gather(-1, best[:, None]).squeeze(-1)  # (B,)
            return chosen.sum(), ((best + 1) * keep.sum(1)).sum().detach()
        best = token_oracle(scores, keep, self.cfg.oracle_lambda, self.cfg.oracle_sigma)  # (B, T)
        chosen = -log_q.gather(-1, best.unsqueeze(-1)).squeeze(-1)  # (B, T)
        return chosen.masked_select(keep).sum(), (best + 1).masked_select(keep).sum().detach()

    def mixed(self, model: nn.Module, sample: dict[str, Any],
              exits: torch.Tensor | None = None) -> tuple[torch.Tensor, float, dict[str, Any]]:
        """The mean loss of M sampled exit sequences per sentence, in one forward pass.

        :param exits: (M*B, T) 1-based exit blocks to use instead of sampling (tests).
        """
        net_input, target = sample["net_input"], sample["target"]  # target: (B, T)
        copies = self.cfg.samples
        repeated = {k: v.repeat(copies, *([1] * (v.dim() - 1))) for k, v in net_input.items()}
        blocks = len(model.decoder.layers)
        if exits is None:
            exits = torch.randint(1, blocks + 1, target.repeat(copies, 1).shape, device=target.device)
        with copied_above_exits(model.decoder, exits):
            out = model(**repeated, return_all_hiddens=True)  # the last block's state of token t is block n_t's
        logits = exit_logits(model.decoder, out.logits, out.hidden_states[-1], exits)  # (M*B, T, V)
        targets = target.repeat(copies, 1)  # (M*B, T)
        if self.exit_distill_weight > 0:
            loss, nll, kl = self._mixed_distilled(model, net_input, logits, targets, exits, blocks)
            extra = {"exit_distill": kl / copies}
        else:
            loss, nll = label_smoothed_cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                                     self.cfg.label_smoothing, self.padding_idx)
            extra = {}
        return loss / copies, sample["ntokens"], self._logging(loss / copies, nll / copies, sample, extra)

    def _mixed_distilled(self, model: nn.Module, net_input: dict[str, torch.Tensor], logits: torch.Tensor,
                         targets: torch.Tensor, exits: torch.Tensor,
                         blocks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, nll, KL) summed: tokens at the last block get the smoothed loss, the others
        (1 - beta) of it plus beta KL(full depth || their exit); the full depth's distribution
        comes from a forward of the batch (B rows, not M*B) without copying or gradients."""
        with torch.no_grad():
            top = model(**net_input).logits  # (B, T, V)
            teacher = torch.log_softmax(top.float(), dim=-1).repeat(logits.size(0) // top.size(0), 1, 1)  # (M*B, T, V)
        beta_rows = exits.lt(blocks).to(teacher.dtype) * self.exit_distill_weight  # (M*B, T)
        return smoothed_and_distilled(logits.view(-1, logits.size(-1)), targets.view(-1),
                                      teacher.view(-1, teacher.size(-1)), beta_rows.view(-1),
                                      self.cfg.label_smoothing, self.padding_idx)

    @staticmethod
    def _logging(loss: torch.Tensor, nll: torch.Tensor, sample: dict[str, Any], extra: dict) -> dict[str, Any]:
        ntokens = sample["ntokens"]
        return {"loss": loss.detach(), "nll_loss": nll.detach(), "ntokens": ntokens,
                "nsentences": sample["nsentences"], "sample_size": ntokens, **extra}

    @staticmethod
    def reduce_metrics(totals: dict[str, float]) -> dict[str, float]:
        """The core's metrics plus each block's NLL per token (``nll_block{n}``)."""
        metrics = Criterion.reduce_metrics(totals)
        ntokens = max(totals.get("ntokens", 0), 1)
        for key in sorted(k for k in totals if k.startswith("nll_block") or k in ("exit_loss", "oracle_exit", "exit_distill")):
            metrics[key] = totals[key] / ntokens  # oracle_exit: the average oracle exit block
        if "nll_loss" in metrics:
            metrics["ppl"] = math.exp(min(metrics["nll_loss"], 100.0))
        return metrics


class copied_above_exits:
    """Within it, decoder block k returns its input for tokens whose exit is below k (1-based
    ``exits`` (B, T)): the exited state is copied upward, as at inference. Forward hooks keep
    the model's own forward (and its DDP synchronisation) in charge."""

    def __init__(self, decoder: nn.Module, exits: torch.Tensor):
        self.decoder, self.exits, self.handles = decoder, exits, []

    def __enter__(self) -> "copied_above_exits":
        for k, layer in enumerate(self.decoder.layers):
            copy = (self.exits <= k).unsqueeze(-1)  # (B, T, 1): block k+1 is above the exit

            def hook(module, args, output, copy=copy):
                return torch.where(copy, args[0], output)

            self.handles.append(layer.register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def exit_logits(decoder: nn.Module, last_logits: torch.Tensor, last_hidden: torch.Tensor,
                exits: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits of each token from its exit block's classifier.

    With copying, the last block's state of a token is its exit block's (``last_hidden`` (B, T, C));
    without per-block classifiers the decoder's own logits are therefore already right.
    Otherwise the tokens of each exit block are scored with that block's classifier.
    """
    if decoder.exit_heads is None:
        return last_logits
    logits = last_logits.clone()
    for n in range(len(decoder.layers) - 1):
        rows = exits == n + 1  # (B, T)
        if rows.any():
            logits[rows] = decoder.project(last_hidden[rows], n).to(logits.dtype)
    return logits
