"""An exit policy under beam search, while beams reorder and finished sentences leave the batch.

The model is the tiny random 4-block decoder of ``test_exit_compaction``, with a bias towards
</s> so that hypotheses end at different steps and sentences finish (and leave the batch) at
different steps. The policy is a plugin's: each row exits after the first block whose state is
positive in one coordinate, a deterministic function of the row's own state (like a
confidence classifier), so a sentence must decode the same whatever its batch neighbours.
"""

from dataclasses import dataclass

import pytest
import torch

from tests.generation.test_exit_compaction import BLOCKS, VOCAB, build, inputs, masked_step
from toolkit import hookimpl
from toolkit.generation.exit_policy import ExitPolicy, ExitStep
from toolkit.generation.generator import GenerationConfig, SequenceGenerator
from toolkit.models.incremental_state import IncrementalState
from toolkit.plugins import load_plugins

ROWS, BEAM = 8, 3


@dataclass
class SignExitConfig:
    _name: str = "sign_exit"
    stride: int = 3  # after block i (0-based), a row exits if its state's coordinate stride*i is > 0


class SignExitPolicy(ExitPolicy):
    def __init__(self, cfg: SignExitConfig, model):
        self.stride = cfg.stride

    def should_exit(self, block, hidden, decoder):
        return hidden[:, self.stride * block] > 0


@dataclass
class PrefixExitConfig:
    _name: str = "prefix_exit"


class PrefixExitPolicy(ExitPolicy):
    """Each hypothesis exits after block (the sum of its tokens so far) mod the depth: a decision
    from its whole prefix, remembered across steps in ``state.hypotheses``, which must follow
    every beam move and departure for a sentence to decode as alone."""

    KEY = "prefix_sum"

    def __init__(self, cfg: PrefixExitConfig, model):
        self.blocks = len(model.decoder.layers)

    def begin_step(self, step: ExitStep) -> None:
        memory = step.state.hypotheses
        memory[self.KEY] = memory.get(self.KEY, torch.zeros_like(step.tokens[:, 0])) + step.tokens[:, 0]

    def decide(self, block, hidden, decoder, step: ExitStep):
        assert hidden.size(0) == step.rows.numel()
        return step.state.hypotheses[self.KEY].index_select(0, step.rows) % self.blocks == block


@dataclass
class LaggingExitConfig:
    _name: str = "lagging_exit"


class LaggingExitPolicy(PrefixExitPolicy):
    """Every row exits after block 1 at positions 1 to 3, so the blocks above run no row and owe
    those positions' keys/values while beams move and sentences leave; ``prefix_exit`` after."""

    def decide(self, block, hidden, decoder, step: ExitStep):
        if 1 <= step.position <= 3:
            return torch.full_like(step.rows, block == 0, dtype=torch.bool)
        return super().decide(block, hidden, decoder, step)


class _Policies:
    @hookimpl
    def toolkit_register(self, registries):
        registries.exit_policy.add("sign_exit", SignExitPolicy, SignExitConfig)
        registries.exit_policy.add("prefix_exit", PrefixExitPolicy, PrefixExitConfig)
        registries.exit_policy.add("lagging_exit", LaggingExitPolicy, LaggingExitConfig)


class _Recording(ExitPolicy):
    """``policy``, noting how many rows exit after each block."""

    def __init__(self, policy):
        self.policy, self.exits = policy, []

    def should_exit(self, block, hidden, decoder):
        exits = self.policy.should_exit(block, hidden, decoder)
        self.exits.append((block, int(exits.sum())))
        return exits


class EveryRowThroughEveryBlock(SequenceGenerator):
    """The reference: each step runs every row through every block (``masked_step``: an exited
    row's state is copied upward), and counts exits as the generator does."""

    def _decode_step(self, tokens, encoder_out, state):
        recording = _Recording(self.exit_policy)
        logits = masked_step(self.model.decoder, tokens, encoder_out, state, recording)
        counts = torch.zeros_like(self.exit_counts)
        for block, n in recording.exits:
            counts[block] += n
        counts[-1] += tokens.size(0) - counts.sum()
        self.exit_counts += counts
        return logits


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is as fast, and far faster when other processes load the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    model = build(pre_norm=True)
    bias = torch.zeros(len(VOCAB))
    bias[VOCAB.eos] = 3.0  # </s> likely enough that hypotheses end at many different steps
    model.decoder.output_projection.bias = torch.nn.Parameter(bias)
    return model


@pytest.fixture
def session(clean_config_store):
    return load_plugins(autoload=False, extra=[("policies", _Policies())])


def generator(session, model, exit_policy, cls=SequenceGenerator):
    cfg = GenerationConfig(beam=BEAM, nbest=BEAM, exit_policy=exit_policy)
    policy = session.registries.exit_policy.build(exit_policy, model) if exit_policy else None
    return cls(model, VOCAB, cfg, session.registries.search.build(cfg.search), policy)


def sources():
    src, _, _ = inputs(ROWS)
    return src, (src != VOCAB.pad).sum(1)


def assert_same(hypotheses, expected):
    assert len(hypotheses) == len(expected) == BEAM
    for h, e in zip(hypotheses, expected):
        assert h.tokens.tolist() == e.tokens.tolist()
        assert h.score == pytest.approx(e.score, abs=1e-5)
        assert torch.allclose(h.positional_scores, e.positional_scores, atol=1e-5, rtol=1e-5), (
            h.positional_scores, e.positional_scores)


@pytest.fixture
def batch_events(monkeypatch):
    """Counts the steps where beams really moved between slots and where sentences left."""
    events = {"reordered": 0, "left": 0}
    reorder, select = IncrementalState.reorder, IncrementalState.select_sentences

    def recording_reorder(state, new_order):
        events["reordered"] += bool((new_order != torch.arange(new_order.numel())).any())
        reorder(state, new_order)

    def recording_select(state, rows):
        events["left"] += 1
        select(state, rows)

    monkeypatch.setattr(IncrementalState, "reorder", recording_reorder)
    monkeypatch.setattr(IncrementalState, "select_sentences", recording_select)
    return events


@pytest.mark.parametrize("name", ["sign_exit", "prefix_exit", "lagging_exit"])
@torch.inference_mode()
def test_each_sentence_decodes_as_alone_while_others_leave_and_beams_reorder(session, model, batch_events, name):
    """``sign_exit`` decides from a row's state; ``prefix_exit`` from memory kept across steps
    in ``state.hypotheses``, which reorders with the caches; ``lagging_exit`` leaves the upper
    blocks' caches behind for three steps."""
    src, lengths = sources()
    policy = {"_name": name}
    batched = generator(session, model, policy)
    results = batched.generate(src, lengths)
    assert batch_events["reordered"] > 0 and batch_events["left"] > 0

    alone_counts, steps = torch.zeros(BLOCKS, dtype=torch.long), []
    for r in range(ROWS):
        alone = generator(session, model, policy)
        [hypotheses] = alone.generate(src[r : r + 1, : lengths[r]], lengths[r : r + 1])
        assert_same(results[r], hypotheses)
        alone_counts += alone.exit_counts
        steps.append(int(alone.exit_counts.sum()) // BEAM)
    # the scenario: sentences decoded for different numbers of steps, hypotheses of one sentence
    # ended at different steps, and rows exited at every block
    assert len(set(steps)) >= 4, steps
    assert any(len({len(h.tokens) for h in hyps}) > 1 for hyps in results)
    assert all(n > 0 for n in batched.exit_counts.tolist()), batched.exit_counts
    # a finished sentence leaves at once: the batch decoded exactly the rows of each sentence alone
    assert batched.exit_counts.tolist() == alone_counts.tolist()


@torch.inference_mode()
def test_compacted_exits_equal_every_row_through_every_block(session, model):
    src, lengths = sources()
    policy = {"_name": "sign_exit"}
    compacted = generator(session, model, policy)
    reference = generator(session, model, policy, EveryRowThroughEveryBlock)
    for got, expected in zip(compacted.generate(src, lengths), reference.generate(src, lengths)):
        assert_same(got, expected)
    assert compacted.exit_counts.tolist() == reference.exit_counts.tolist()


@torch.inference_mode()
def test_fixed_depth_at_the_last_block_equals_no_policy(session, model):
    src, lengths = sources()
    full_depth = generator(session, model, {"_name": "fixed_depth", "block": BLOCKS})
    plain = generator(session, model, None)
    for got, expected in zip(full_depth.generate(src, lengths), plain.generate(src, lengths)):
        assert_same(got, expected)
    assert full_depth.average_exit() == BLOCKS
    assert full_depth.exit_counts.tolist() == plain.exit_counts.tolist()
