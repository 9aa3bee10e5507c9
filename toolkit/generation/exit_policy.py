"""Early exits in decoding: the policy interface and the block-by-block decoder step.

A plugin returns an ``ExitPolicy`` from the ``toolkit_exit_policy`` hook; the generator then
decodes each step block by block and asks the policy, after every block but the last, which
hypotheses stop there. A stopped hypothesis keeps its state: it is copied to the blocks
above, which compute their keys and values from it so later positions can attend to it, and
its next-token distribution is the output layer applied to that state.
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

    Every block still runs on all N rows, so that its caches stay aligned; rows that already
    exited keep their copied state as that block's output (only keys and values computed from
    it are used). Skipping their computation is the depth-adaptive plugin's job.
    """
    x = decoder.embedding(tokens, state.length)  # (N, 1, C)
    num_blocks = len(decoder.layers)
    exit_block = torch.full((x.size(0),), num_blocks, dtype=torch.long, device=x.device)
    running = torch.ones(x.size(0), dtype=torch.bool, device=x.device)
    for i, layer in enumerate(decoder.layers):
        out = layer(x, encoder_out.states, encoder_out.padding_mask, state.self_attn[i], state.cross_attn[i])
        x = torch.where(running[:, None, None], out, x)  # exited rows: state copied upward
        if i < num_blocks - 1 and running.any():
            rows = running.nonzero().squeeze(1)
            exits = policy.should_exit(i, x[rows, 0], decoder)
            exit_block[rows[exits]] = i + 1
            running[rows[exits]] = False
    state.length += 1
    return decoder.project(x[:, 0]), exit_block
