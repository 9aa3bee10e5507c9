"""Early exits in decoding: the policy interface and the block-by-block decoder step.

A plugin returns an ``ExitPolicy`` from the ``toolkit_exit_policy`` hook; the generator then
decodes each step block by block and asks the policy, after every block but the last, which
hypotheses stop there. A stopped hypothesis keeps its state: it is copied to the blocks
above, which compute only their keys and values from it (so later positions can attend to
it) and run nothing else for it; its next-token distribution is the output layer applied to
that state.
"""

from __future__ import annotations

import torch

from toolkit.models.base import EncoderOutput
from toolkit.models.incremental_state import IncrementalState


class ExitPolicy:
    """Decides, after a decoder block, which rows (hypotheses) exit there."""

    def should_exit(self, block: int, hidden: torch.Tensor, decoder) -> torch.Tensor:
        """:param block: 0-based index of the block just computed.
        :param hidden: (N, C) that block's output for the rows still running.
        :param decoder: the decoder (``decoder.project(hidden)`` gives vocabulary logits).
        :return: (N,) bool, True for rows that exit now.
        """
        raise NotImplementedError


def decode_step_with_exits(decoder, tokens: torch.Tensor, encoder_out: EncoderOutput,
                           state: IncrementalState, policy: ExitPolicy) -> tuple[torch.Tensor, torch.Tensor]:
    """One incremental step asking ``policy`` after each block.

    :param tokens: (N, 1) the newest token of each hypothesis.
    :return: logits (N, V) and the 1-based block each row exited at (N,).

    Once a row exits, the blocks above do not run it: each gathers the rows still running
    (``DecoderLayer.forward(..., rows=)``) and, for the exited ones, only adds to its cache the
    keys and values of their copied state. So decoding costs what the exits save.
    """
    x = decoder.embedding(tokens, state.length)  # (N, 1, C)
    batch, num_blocks = x.size(0), len(decoder.layers)
    exit_block = torch.full((batch,), num_blocks, dtype=torch.long, device=x.device)
    rows = torch.arange(batch, device=x.device)  # the rows still running
    for i, layer in enumerate(decoder.layers):
        x = layer(x, encoder_out.states, encoder_out.padding_mask, state.self_attn[i], state.cross_attn[i],
                  rows=rows if rows.numel() < batch else None)  # exited rows keep their state: copied upward
        if i < num_blocks - 1 and rows.numel():
            exits = policy.should_exit(i, x[rows, 0], decoder)
            exit_block[rows[exits]] = i + 1
            rows = rows[~exits]
    state.length += 1
    return decoder.project(x[:, 0]), exit_block
