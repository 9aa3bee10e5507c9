"""The results script's anytime model: cut to n blocks, it computes what exit n computes, and
the model it was cut from stays whole."""

from __future__ import annotations

import torch

from depth_adaptive.results import truncated

from da_testing import BLOCKS, tiny_batch, tiny_model


def test_a_truncated_model_equals_exit_n_and_leaves_the_model_whole():
    model = tiny_model().eval()
    net_input = tiny_batch()["net_input"]
    with torch.no_grad():
        hidden = model(**net_input, return_all_hiddens=True).hidden_states
        for blocks in range(1, BLOCKS + 1):
            cut = truncated(model, blocks)
            assert len(cut.decoder.layers) == blocks and len(model.decoder.layers) == BLOCKS
            torch.testing.assert_close(cut(**net_input).logits, model.decoder.project(hidden[blocks - 1], blocks - 1))
