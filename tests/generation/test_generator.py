import copy
from dataclasses import dataclass

import pytest
import torch

from toolkit.data.preprocess import read_lines
from toolkit.generation.exit_policy import ExitPolicy
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.translator import Translator
from toolkit.inference import load_for_inference
from toolkit.plugins import load_plugins
from toolkit.registry import RegistryError
from toolkit.scoring.bleu import score
from toolkit.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def loaded(trained_run):
    _, task, model, _ = load_for_inference(trained_run / "checkpoint_last.pt")
    sources = read_lines(trained_run / "data-bin" / "toy-text" / "test.src")[:48]
    references = read_lines(trained_run / "data-bin" / "toy-text" / "test.tgt")[:48]
    return task, model, sources, references


def translator(loaded, batch=64, **gen):
    task, model, _, _ = loaded
    return Translator(task, model, GenerationConfig(**gen), max_sentences=batch)


def test_the_trained_toy_model_translates_well(loaded):
    *_, sources, references = loaded
    hypotheses = [t.text for t in translator(loaded, beam=5).translate(sources)]
    assert score(hypotheses, references).bleu > 50


def _greedy_by_full_forward(model, task, source: str, max_len: int) -> list[int]:
    """Reference decoder: the whole prefix through the non-incremental model every step."""
    d = task.tgt_dict
    src = torch.tensor([task.src_tokenizer.encode([source])[0] + [d.eos]])
    prefix = [d.bos]
    for step in range(max_len + 1):
        lprobs = model.log_probs(model(src, None, torch.tensor([prefix])).logits[0, -1])
        lprobs[[d.bos, d.pad]] = float("-inf")
        token = d.eos if step == max_len else int(lprobs.argmax())
        prefix.append(token)
        if token == d.eos:
            break
    return prefix[1:]


def test_beam_one_equals_greedy_decoding_with_full_forward_passes(loaded):
    task, model, sources, _ = loaded
    results = translator(loaded, beam=1).translate(sources[:12])
    for source, result in zip(sources[:12], results):
        max_len = int(1.2 * (len(task.src_tokenizer.encode([source])[0]) + 1) + 10)
        with torch.inference_mode():
            expected = _greedy_by_full_forward(model, task, source, max_len)
        assert result.hypotheses[0].tokens.tolist() == expected


def test_incremental_token_scores_equal_a_full_forward_pass(loaded):
    task, model, sources, _ = loaded
    for source, result in zip(sources[:8], translator(loaded, beam=4).translate(sources[:8])):
        hyp = result.hypotheses[0]
        src = torch.tensor([task.src_tokenizer.encode([source])[0] + [task.src_dict.eos]])
        prev = torch.tensor([[task.tgt_dict.bos] + hyp.tokens.tolist()[:-1]])
        with torch.inference_mode():
            lprobs = model.log_probs(model(src, None, prev).logits)[0]  # (L, V)
        full = lprobs.gather(1, hyp.tokens.view(-1, 1)).squeeze(1)
        torch.testing.assert_close(hyp.positional_scores, full, atol=1e-4, rtol=1e-4)
        assert hyp.score == pytest.approx(float(full.sum()) / len(full), abs=1e-4)


def test_results_do_not_depend_on_batch_neighbours_or_size(loaded):
    *_, sources, _ = loaded
    batched = translator(loaded, beam=5, batch=64).translate(sources)
    small = translator(loaded, beam=5, batch=3).translate(sources)
    alone = [translator(loaded, beam=5).translate([s])[0] for s in sources[:10]]
    for a, b in zip(batched, small):
        assert a.hypotheses[0].tokens.tolist() == b.hypotheses[0].tokens.tolist()
        assert a.hypotheses[0].score == pytest.approx(b.hypotheses[0].score, abs=1e-4)
    for a, c in zip(batched, alone):
        assert a.hypotheses[0].tokens.tolist() == c.hypotheses[0].tokens.tolist()


def test_length_penalty_normalizes_scores_and_favours_longer_outputs(loaded):
    *_, sources, _ = loaded
    short = translator(loaded, beam=5, lenpen=0.0).translate(sources)
    long = translator(loaded, beam=5, lenpen=3.0).translate(sources)
    for t in long:
        hyp = t.hypotheses[0]
        assert hyp.score == pytest.approx(float(hyp.positional_scores.sum()) / len(hyp.tokens) ** 3.0, abs=1e-4)
    assert sum(len(t.hypotheses[0].tokens) for t in long) > sum(len(t.hypotheses[0].tokens) for t in short)


def test_max_and_min_length(loaded):
    *_, sources, _ = loaded
    for t in translator(loaded, beam=3, max_len_a=0.0, max_len_b=3).translate(sources):
        assert len(t.hypotheses[0].tokens) <= 4  # at most 3 tokens, then </s>
    for t in translator(loaded, beam=3, min_len=30, max_len_b=40).translate(sources[:5]):
        assert len(t.hypotheses[0].tokens) > 30


def test_nbest_hypotheses_are_sorted(loaded):
    *_, sources, _ = loaded
    for t in translator(loaded, beam=5, nbest=3).translate(sources[:6]):
        scores = [h.score for h in t.hypotheses]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)


def test_sampling_is_seeded_and_differs_from_beam(loaded):
    *_, sources, _ = loaded
    sampling = {"_name": "sampling", "topk": 20, "seed": 3, "temperature": 2.0}
    a = [t.text for t in translator(loaded, beam=1, search=sampling).translate(sources)]
    b = [t.text for t in translator(loaded, beam=1, search=sampling).translate(sources)]
    greedy = [t.text for t in translator(loaded, beam=1).translate(sources)]
    assert a == b and a != greedy


def test_empty_and_over_long_lines(loaded, caplog):
    *_, sources, _ = loaded
    very_long = " ".join([sources[0]] * 40)
    results = translator(loaded, beam=2).translate(["", sources[0], "   ", very_long])
    assert [r.text for r in results][0] == "" and results[2].text == ""
    assert results[1].text and results[3].text
    assert "longer than the model" in caplog.text


def test_beam_larger_than_the_vocabulary_is_refused(loaded):
    with pytest.raises(ValueError, match="larger than the target vocabulary"):
        translator(loaded, beam=10_000)


def test_foreign_source_warns_about_unknown_pieces(loaded, caplog):
    translator(loaded, beam=1).translate(["Привет мир, как дела?"] * 3)
    assert "unknown to the model's vocabulary" in caplog.text


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Translator.from_checkpoint(tmp_path / "nope.pt")


def test_fixed_depth_one_equals_the_one_block_model(loaded):
    task, model, sources, _ = loaded
    early = translator(loaded, beam=4, exit_policy={"_name": "fixed_depth", "block": 1})
    truncated = copy.deepcopy(model)
    del truncated.decoder.layers[1]
    expected = Translator(task, truncated, GenerationConfig(beam=4), load_plugins(autoload=False))
    assert [t.hypotheses[0].tokens.tolist() for t in early.translate(sources[:10])] == [
        t.hypotheses[0].tokens.tolist() for t in expected.translate(sources[:10])]
    assert early.generator.average_exit() == 1.0 and early.generator.exit_histogram() == [1.0, 0.0]


def test_fixed_depth_at_the_last_block_equals_full_depth(loaded):
    *_, sources, _ = loaded
    t = translator(loaded, beam=4, exit_policy={"_name": "fixed_depth", "block": 2})
    a = t.translate(sources[:10])
    b = translator(loaded, beam=4).translate(sources[:10])
    assert [x.hypotheses[0].tokens.tolist() for x in a] == [x.hypotheses[0].tokens.tolist() for x in b]
    assert t.generator.average_exit() == 2.0
    with pytest.raises(ValueError, match=r"block must be in 1\.\.2 for this 2-block decoder, got 3"):
        translator(loaded, exit_policy={"_name": "fixed_depth", "block": 3})


@dataclass
class _EveryOtherRowConfig:
    _name: str = "every_other_row"


class _EveryOtherRow(ExitPolicy):
    """A third party's policy: even rows (of those still running) exit after block 1."""

    def __init__(self, cfg, model):
        self.rows_seen = []

    def should_exit(self, block, hidden, decoder):
        self.rows_seen.append((block, hidden.size(0)))
        return torch.arange(hidden.size(0)) % 2 == 0


class _PolicyPlugin:
    from toolkit import hookimpl

    @hookimpl
    def toolkit_register(self, registries):
        registries.exit_policy.add("every_other_row", _EveryOtherRow, _EveryOtherRowConfig)


def test_a_plugins_exit_policy_is_selected_by_name(loaded, clean_config_store):
    task, model, sources, _ = loaded
    plugins = load_plugins(autoload=False, extra=[("policies", _PolicyPlugin())])
    t = Translator(task, model, GenerationConfig(beam=4, exit_policy={"_name": "every_other_row"}), plugins)
    translations = t.translate(sources[:10])
    assert all(x.text for x in translations)
    policy = t.generator.exit_policy
    assert isinstance(policy, _EveryOtherRow) and all(block == 0 for block, _ in policy.rows_seen)
    assert 1.0 < t.generator.average_exit() < 2.0  # about half the rows left after block 1
    first, second = t.generator.exit_histogram()
    assert 0.4 < first < 0.7 and first + second == pytest.approx(1.0)
    assert t.generator.average_exit() == pytest.approx(first + 2 * second)
    with pytest.raises(RegistryError, match="unknown exit_policy 'nosuch'; registered exit_policy names: "
                                            "every_other_row, fixed_depth"):
        Translator(task, model, GenerationConfig(exit_policy={"_name": "nosuch"}), plugins)
