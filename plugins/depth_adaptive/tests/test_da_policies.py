"""Exit policies: decisions on hand cases, decoding with mixed exits, per-block classifiers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from depth_adaptive.heads import attach_exit_heads
from depth_adaptive.options import DepthAdaptiveOptions
from depth_adaptive.policies import (ConfidenceConfig, ConfidenceExit, EntropyConfig, EntropyExit, PatienceConfig,
                                     PatienceExit)
from toolkit.generation.exit_policy import decode_step_with_exits
from toolkit.generation.generator import GenerationConfig, SequenceGenerator
from toolkit.generation.search import BeamSearch, BeamSearchConfig

from da_testing import BLOCKS, VOCAB, tiny_model


class LogitsDecoder:
    """A stand-in decoder whose block states are already logits."""

    layers = [None] * BLOCKS

    @staticmethod
    def project(hidden, block=None):
        return hidden


def logits_with_top(probability: float, vocab: int = 4) -> torch.Tensor:
    """Logits whose softmax puts ``probability`` on token 0 and the rest evenly."""
    rest = (1 - probability) / (vocab - 1)
    return torch.tensor([math.log(probability)] + [math.log(rest)] * (vocab - 1))


def test_confidence_exits_at_or_above_each_blocks_threshold():
    policy = ConfidenceExit(ConfidenceConfig(thresholds=[0.9, 0.5, 0.2]), SimpleNamespace(decoder=LogitsDecoder))
    hidden = torch.stack([logits_with_top(p) for p in (0.95, 0.6, 0.3)])
    exits, logits = policy.should_exit(0, hidden, LogitsDecoder)
    assert exits.tolist() == [True, False, False] and torch.equal(logits, hidden)
    assert policy.should_exit(1, hidden, LogitsDecoder)[0].tolist() == [True, True, False]
    assert policy.should_exit(2, hidden, LogitsDecoder)[0].tolist() == [True, True, True]


def test_entropy_exits_below_the_threshold_in_nats():
    uniform, peaked = torch.zeros(4), logits_with_top(0.97)
    policy = EntropyExit(EntropyConfig(threshold=0.5), SimpleNamespace(decoder=LogitsDecoder))
    peaked_entropy = -(torch.softmax(peaked, 0) * torch.log_softmax(peaked, 0)).sum().item()
    assert peaked_entropy < 0.5 < math.log(4)
    assert policy.should_exit(0, torch.stack([uniform, peaked]), LogitsDecoder)[0].tolist() == [False, True]


def test_patience_counts_consecutive_agreements_of_the_rows_still_running():
    policy = PatienceExit(PatienceConfig(patience=2), SimpleNamespace(decoder=LogitsDecoder))
    one_hot = torch.eye(4) * 5  # row r's state predicts token r
    # three rows; predictions per block: row 0: 1,1,1 (exits after block 3); row 1: 2,3,3,.. ; row 2: 0,0,0
    policy.begin_step(None)
    assert policy.should_exit(0, one_hot[[1, 2, 0]], LogitsDecoder)[0].tolist() == [False, False, False]
    assert policy.should_exit(1, one_hot[[1, 3, 0]], LogitsDecoder)[0].tolist() == [False, False, False]
    exits, _ = policy.should_exit(2, one_hot[[1, 3, 0]], LogitsDecoder)
    assert exits.tolist() == [True, False, True]  # rows 0 and 2 agreed twice; row 1 once
    policy.begin_step(None)  # a new step forgets
    assert policy.should_exit(0, one_hot[[1, 1, 1]], LogitsDecoder)[0].tolist() == [False, False, False]


@pytest.mark.parametrize("policy, cfg, message", [
    (ConfidenceExit, ConfidenceConfig(thresholds=[0.5, 0.5]), r"needs 3 values \(blocks 1..3 of this 4-block"),
    (EntropyExit, EntropyConfig(thresholds=[1.0] * 4), "needs 3 values"),
    (PatienceExit, PatienceConfig(patience=4), r"patience must be in 1..3")])
def test_settings_that_do_not_fit_the_depth_are_named(policy, cfg, message):
    with pytest.raises(ValueError, match=message):
        policy(cfg, tiny_model())


def _generate(model, policy, sources: torch.Tensor, lengths: torch.Tensor):
    generator = SequenceGenerator(model, VOCAB, GenerationConfig(beam=3, max_len_b=8), BeamSearch(BeamSearchConfig()),
                                  policy)
    return generator, generator.generate(sources, lengths)


def test_a_batch_mixing_exits_decodes_each_sentence_as_alone():
    model = tiny_model(pre_norm=False).eval()
    torch.manual_seed(5)
    sources = torch.randint(4, len(VOCAB), (6, 7))
    lengths = torch.full((6,), 7)
    threshold = ConfidenceConfig(thresholds=[0.53, 0.12, 0.13])  # near this random model's confidences
    with torch.no_grad():
        generator, batch = _generate(model, ConfidenceExit(threshold, model), sources, lengths)
        alone = [_generate(model, ConfidenceExit(threshold, model), sources[i:i + 1], lengths[i:i + 1])[1][0]
                 for i in range(6)]
    histogram = generator.exit_histogram()
    assert sum(share > 0 for share in histogram) >= 2, histogram  # exits really mixed
    for together, solo in zip(batch, alone):
        assert [h.tokens.tolist() for h in together] == [h.tokens.tolist() for h in solo]
        assert [h.score for h in together] == pytest.approx([h.score for h in solo], abs=1e-4)


def test_an_exited_row_is_scored_by_its_blocks_classifier():
    model = tiny_model().eval()
    attach_exit_heads(model.decoder, OmegaConf.structured(DepthAdaptiveOptions("separate")))
    sources, prev = torch.randint(4, len(VOCAB), (3, 5)), torch.full((3, 1), VOCAB.eos)
    with torch.no_grad():
        encoder_out = model.encoder(sources, torch.full((3,), 5))
        hidden = model.decoder(prev, encoder_out, return_all_hiddens=True).hidden_states
        everyone = ConfidenceExit(ConfidenceConfig(threshold=0.0), model)  # every row exits after block 1
        logits, exit_block, _ = decode_step_with_exits(model.decoder, prev, encoder_out, model.decoder.new_state(),
                                                    everyone)
    assert exit_block.tolist() == [1, 1, 1]
    assert torch.allclose(logits, model.decoder.exit_heads[0](hidden[0][:, 0]), atol=1e-5)
    assert not torch.allclose(logits, model.decoder.project(hidden[0][:, 0]), atol=1e-3)


def test_a_switched_off_block_computes_no_distribution_and_projections_are_counted():
    model = tiny_model().eval()
    sources, prev = torch.randint(4, len(VOCAB), (3, 5)), torch.full((3, 1), VOCAB.eos)
    cases = {  # policy -> (projected rows, exit blocks)
        "confidence off everywhere": (ConfidenceExit(ConfidenceConfig(threshold=2.0), model), 3, [BLOCKS] * 3),
        "entropy off everywhere": (EntropyExit(EntropyConfig(threshold=0.0), model), 3, [BLOCKS] * 3),
        "all exit at block 1": (ConfidenceExit(ConfidenceConfig(threshold=0.0), model), 3, [1] * 3),
        "checked at block 2 only, none exits": (
            ConfidenceExit(ConfidenceConfig(thresholds=[2.0, 1.0, 2.0]), model), 6, [BLOCKS] * 3),
    }
    with torch.no_grad():
        encoder_out = model.encoder(sources, torch.full((3,), 5))
        for name, (policy, projected, exits) in cases.items():
            _, exit_block, counted = decode_step_with_exits(model.decoder, prev, encoder_out, model.decoder.new_state(),
                                                            policy)
            assert (counted, exit_block.tolist()) == (projected, exits), name
