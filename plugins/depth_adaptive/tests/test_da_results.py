"""The results script's anytime model: cut to n blocks, it computes what exit n computes, and
the model it was cut from stays whole; its adaptive rows are the runs and tuned files there."""

from __future__ import annotations

from pathlib import Path

import torch

from depth_adaptive.results import policies, truncated

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


def test_policies_pair_each_halting_run_with_its_own_tuned_file(tmp_path):
    for run in ("aligned_low", "halting", "halting_mixed", "halting_untuned"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "checkpoint_last.pt").touch()
    (tmp_path / "tuned").mkdir()
    for name in ("confidence", "halting", "halting_mixed"):  # no entropy.json, no halting_untuned.json
        (tmp_path / "tuned" / f"{name}.json").touch()
    chosen = policies(tmp_path, "aligned_low", patience=[1])
    assert [(run, options["_name"], Path(options.get("tuned", "-")).name) for run, options in chosen] == [
        ("aligned_low", "patience", "-"), ("aligned_low", "confidence", "confidence.json"),
        ("halting", "halting", "halting.json"), ("halting_mixed", "halting", "halting_mixed.json")]


class _WeightlessLinear(torch.nn.Module):
    """What a quantized Linear looks like from outside: its sizes, and no ``weight``."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features


def test_the_projection_cost_is_read_from_sizes_so_quantized_models_tune():
    from depth_adaptive.tune import projection_in_blocks

    model = tiny_model()
    expected = projection_in_blocks(model)
    dim, vocab = model.decoder.output_projection.in_features, model.decoder.output_projection.out_features
    ffn = model.decoder.layers[0].ffn.fc1.out_features
    assert expected == vocab * dim / (6 * dim * dim + 2 * dim * ffn)
    model.decoder.output_projection = _WeightlessLinear(model.decoder.output_projection)
    model.decoder.layers[0].ffn.fc1 = _WeightlessLinear(model.decoder.layers[0].ffn.fc1)
    assert projection_in_blocks(model) == expected
