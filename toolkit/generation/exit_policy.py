"""Early exits in decoding: the policy interface and the block-by-block decoder step.

Exit policies are a registry kind, like search strategies: a plugin registers one with its
config (``registries.exit_policy.add(name, cls, cfg)``), and ``toolkit-generate
generation/exit_policy=NAME`` selects it. With a policy, the generator decodes each step
block by block and asks the policy, after every block but the last, which hypotheses stop
there. A stopped hypothesis keeps its state: it is copied to the blocks above, which compute
only their keys and values from it (so later positions can attend to it; computed when a later
position first needs them) and run nothing else for it; its next-token distribution is the
output layer applied to that state.

A policy sees each step through an ``ExitStep``: the position, each row's newest token, the
encoder output, the rows still running, and the step's ``IncrementalState``, whose
``hypotheses`` dict keeps per-hypothesis tensors across steps and reorders them with the caches
when beams move or sentences leave (a plan made once per sentence, a running history).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toolkit.models.base import EncoderOutput
from toolkit.models.incremental_state import BlockRows, IncrementalState


@dataclass
class ExitStep:
    """One decoding step as an exit policy sees it (the same object for every block of it)."""

    position: int  # 0-based target position of ``tokens`` (0: the <s> that starts every hypothesis)
    tokens: torch.Tensor  # (N, 1) each row's newest token
    # (N / g, S, C) the source states, one row per source: rows i*g .. i*g+g-1 of the N decode
    # source i, g = ``state.rows_per_source`` (a beam); ``encoder_out`` gives them per row
    source_out: EncoderOutput
    state: IncrementalState  # the step's caches; ``state.hypotheses`` holds per-row memory
    rows: torch.Tensor  # (R,) indices into the N rows of those still running, in the order ``hidden`` holds them

    @property
    def encoder_out(self) -> EncoderOutput:
        """(N, S, C) each row's source states (``source_out`` repeated over the rows sharing a source)."""
        group = self.state.rows_per_source
        if group == 1:
            return self.source_out
        return EncoderOutput(self.source_out.states.repeat_interleave(group, 0),
                             self.source_out.padding_mask.repeat_interleave(group, 0))


class ExitPolicy:
    """Decides, after a decoder block, which rows (hypotheses) exit there.

    Built once per generator from its config and the model: ``cls.from_config(cfg, model)``
    when the class has that factory, else ``cls(cfg, model)``.
    """

    def should_exit(self, block: int, hidden: torch.Tensor, decoder
                    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The decision from the block's states alone (what most policies need).

        :param block: 0-based index of the block just computed.
        :param hidden: (N, C) that block's output for the rows still running.
        :param decoder: the decoder (``decoder.project(hidden, block)`` gives that block's
            vocabulary logits).
        :return: (N,) bool, True for rows that exit now; or ``(exits, logits)`` with the
            (N, V) logits the policy computed to decide, which then serve the exiting rows
            (no second projection).
        """
        raise NotImplementedError

    def decide(self, block: int, hidden: torch.Tensor, decoder, step: ExitStep
               ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """What the decoding step calls after each block but the last; by default
        ``should_exit``. Override it to read the step: which rows ``hidden`` holds
        (``step.rows``), the position, the tokens, the source, per-hypothesis memory."""
        return self.should_exit(block, hidden, decoder)

    def begin_step(self, step: ExitStep) -> None:
        """Called before each decoding step's first block (``step.rows`` is every row). A
        policy that remembers rows across blocks (patience) resets here; one that decides from
        the source (sequence-level halting) reads ``step.encoder_out``. Exited rows leave in the
        order the policy saw them, so row ``i`` of the next call is the ``i``-th row that did
        not exit."""


@dataclass
class FixedDepthConfig:
    _name: str = "fixed_depth"
    block: int = 1  # every hypothesis exits after this decoder block (1-based)


class FixedDepth(ExitPolicy):
    """Every hypothesis exits after the same block: the model decoded at a smaller depth (the
    "anytime" decoding of aligned depth-adaptive or LayerDrop-trained models)."""

    def __init__(self, cfg: FixedDepthConfig, model):
        blocks = len(model.decoder.layers)
        if not 1 <= cfg.block <= blocks:
            raise ValueError(f"exit_policy.block must be in 1..{blocks} for this {blocks}-block decoder, "
                             f"got {cfg.block}")
        self.block = cfg.block

    def should_exit(self, block: int, hidden: torch.Tensor, decoder) -> torch.Tensor:
        return torch.full((hidden.size(0),), block + 1 >= self.block, dtype=torch.bool, device=hidden.device)


def decode_step_with_exits(decoder, tokens: torch.Tensor, encoder_out: EncoderOutput,
                           state: IncrementalState, policy: ExitPolicy) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One incremental step asking ``policy`` after each block.

    :param tokens: (N, 1) the newest token of each hypothesis.
    :param encoder_out: (N / g, S, C), one row per source, g = ``state.rows_per_source``.
    :return: logits (N, V), the 1-based block each row exited at (N,), and the number of rows
        projected onto the vocabulary (by the policy to decide, or to score a row): the cost
        that early exits add, next to the blocks they save.

    Once a row exits, the blocks above do not run it: each runs the rows still running
    (``DecoderLayer.forward(..., rows=)``). An exited row's keys and values at the blocks above
    (of its state, copied upward) are computed only once a later position of the same
    hypothesis runs that block, batched with that position's (``CopiedStates``), and never for
    blocks no later position reaches. So decoding costs what the exits save. A row's
    logits are those the policy computed to decide, else its exit block's own classifier's
    (``decoder.exit_heads``); without either, every row's state (its exit block's, copied
    upward) goes through the shared output projection in one product at the end of the step.
    """
    x = decoder.embedding(tokens, state.length)  # (N, 1, C)
    batch, num_blocks = x.size(0), len(decoder.layers)
    exit_block = torch.full((batch,), num_blocks, dtype=torch.long, device=x.device)
    rows = torch.arange(batch, device=x.device)  # the rows still running
    decided: list[tuple[torch.Tensor, torch.Tensor]] = []  # (rows, their logits) computed before the end
    step = ExitStep(state.length, tokens, encoder_out, state, rows)
    policy.begin_step(step)
    projected = 0
    for i, layer in enumerate(decoder.layers):
        if not rows.numel():
            break  # no row runs the blocks above: they owe this position its keys/values
        block_rows = BlockRows(rows, batch, state.length, state.copied.owed(i, rows))
        x = layer(x, encoder_out.states, encoder_out.padding_mask, state.self_attn[i], state.cross_attn[i],
                  rows=block_rows)  # exited rows keep their state: copied upward
        if i < num_blocks - 1:
            step.rows = rows
            decision = policy.decide(i, x.index_select(0, rows)[:, 0], decoder, step)
            exits, logits = decision if isinstance(decision, tuple) else (decision, None)
            projected += logits.size(0) if logits is not None else 0
            if exits.any():
                where = exits.nonzero().squeeze(1)
                leaving = rows.index_select(0, where)
                if logits is not None:
                    decided.append((leaving, logits.index_select(0, where)))
                elif decoder.exit_heads is not None:
                    decided.append((leaving, decoder.project(x[leaving, 0], i)))
                    projected += leaving.numel()
                exit_block.index_fill_(0, leaving, i + 1)
                rows = rows[~exits]
    state.copied.record(x[:, 0], exit_block)
    state.length += 1
    logits, shared = _step_logits(decoder, x[:, 0], decided)
    return logits, exit_block, projected + shared


def _step_logits(decoder, hidden: torch.Tensor, decided: list[tuple[torch.Tensor, torch.Tensor]]
                 ) -> tuple[torch.Tensor, int]:
    """(N, V) logits: ``decided`` rows keep theirs, the others get the shared output projection
    of their state in ``hidden`` (N, C); also the number of rows that projection took."""
    if not decided:
        return decoder.project(hidden), hidden.size(0)
    pending = torch.ones(hidden.size(0), dtype=torch.bool, device=hidden.device)
    for leaving, _ in decided:
        pending[leaving] = False
    remaining = pending.nonzero().squeeze(1)
    first = decided[0][1]
    logits = first.new_empty(hidden.size(0), first.size(-1))
    if remaining.numel():
        logits.index_copy_(0, remaining, decoder.project(hidden.index_select(0, remaining)).to(logits.dtype))
    for leaving, block_logits in decided:
        logits.index_copy_(0, leaving, block_logits.to(logits.dtype))
    return logits, remaining.numel()
