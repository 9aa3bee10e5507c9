"""Ensembles: several checkpoints decoding as one (the mean of their probabilities at each step)."""

import copy
import math
from pathlib import Path

import pytest
import torch

from toolkit.checkpoint import load_checkpoint, save_checkpoint
from toolkit.cli.generate import generate
from toolkit.config import compose_train_config
from toolkit.data.preprocess import read_lines
from toolkit.errors import ConfigError
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.translator import Translator
from toolkit.inference import checkpoint_paths, load_ensemble_for_inference, load_for_inference
from toolkit.models.ensemble import EnsembleModel

from tests.generation.test_generator import _greedy_by_full_forward


@pytest.fixture(scope="module")
def members(trained_run):
    """The toy run's first and last epoch checkpoints: one task, two different models."""
    paths = [trained_run / "checkpoint1.pt", trained_run / "checkpoint3.pt"]
    loaded = [load_for_inference(p) for p in paths]
    sources = read_lines(trained_run / "data-bin" / "toy-text" / "test.src")[:24]
    return paths, loaded[0][1], [m for _, _, m, _ in loaded], sources


def test_greedy_ensemble_takes_the_argmax_of_the_mean_probability(members):
    """Incremental decoding against whole-prefix forwards of the ensemble, whose teacher-forced
    output is the mean distribution (checked against the members below)."""
    _, task, models, sources = members
    ensemble = EnsembleModel(models)
    results = Translator(task, ensemble, GenerationConfig(beam=1)).translate(sources[:10])
    with torch.inference_mode():
        for source, result in zip(sources[:10], results):
            max_len = int(1.2 * (len(task.src_tokenizer.encode([source])[0]) + 1) + 10)
            assert result.hypotheses[0].tokens.tolist() == _greedy_by_full_forward(ensemble, task, source, max_len)


def test_the_ensemble_scores_differ_from_each_members(members):
    _, task, models, sources = members
    ensemble = Translator(task, EnsembleModel(models), GenerationConfig(beam=5)).translate(sources)
    alone = [Translator(task, m, GenerationConfig(beam=5)).translate(sources) for m in models]
    for single in alone:
        assert [t.hypotheses[0].score for t in single] != pytest.approx([t.hypotheses[0].score for t in ensemble])


def test_a_model_ensembled_with_itself_decodes_as_the_model(members):
    _, task, models, sources = members
    twice = Translator(task, EnsembleModel([models[1], models[1]]), GenerationConfig(beam=5)).translate(sources)
    once = Translator(task, models[1], GenerationConfig(beam=5)).translate(sources)
    assert [t.hypotheses[0].tokens.tolist() for t in twice] == [t.hypotheses[0].tokens.tolist() for t in once]
    assert [t.hypotheses[0].score for t in twice] == pytest.approx([t.hypotheses[0].score for t in once], abs=1e-4)


def test_a_batch_with_sentences_leaving_gives_each_sentences_own_result(members):
    """Sentences finish at different steps: every member's encoder output and caches shrink."""
    _, task, models, sources = members
    ensemble = EnsembleModel(models)
    batched = Translator(task, ensemble, GenerationConfig(beam=4), max_sentences=24).translate(sources)
    alone = Translator(task, ensemble, GenerationConfig(beam=4), max_sentences=1).translate(sources)
    assert [t.text for t in batched] == [t.text for t in alone]
    assert [t.hypotheses[0].score for t in batched] == pytest.approx([t.hypotheses[0].score for t in alone], abs=1e-4)


def test_teacher_forced_forward_returns_the_mean_distribution(members):
    _, _, models, _ = members
    src, prev = torch.tensor([[5, 6, 7, 2]]), torch.tensor([[0, 8, 9]])
    with torch.inference_mode():
        mixed = EnsembleModel(models)(src, None, prev).logits  # (1, 3, V)
        expected = sum(m.log_probs(m(src, None, prev).logits).exp() for m in models) / 2
    assert torch.allclose(mixed.exp(), expected, atol=1e-6)
    assert torch.allclose(mixed.exp().sum(-1), torch.ones(1, 3), atol=1e-5)


def test_translator_and_generate_take_several_checkpoints(members, tmp_path):
    paths, task, models, sources = members
    joined = ":".join(str(p) for p in paths)
    via_translator = Translator.from_checkpoint(joined, GenerationConfig(beam=4)).translate(sources)
    direct = Translator(task, EnsembleModel(models), GenerationConfig(beam=4)).translate(sources)
    assert [t.text for t in via_translator] == [t.text for t in direct]
    out = tmp_path / "hyps.txt"
    result = generate(compose_train_config([f"path={joined}", "split=test", "generation.beam=4", f"output={out}"],
                                           config_name="generate"))
    assert read_lines(out)[:24] == [t.text for t in direct]
    assert result["scores"].bleu > 0


def test_checkpoint_paths_split_on_colons_unless_the_name_is_a_file(tmp_path):
    assert checkpoint_paths("a.pt:b/c.pt") == [Path("a.pt"), Path("b/c.pt")]
    odd = tmp_path / "run:1.pt"
    odd.write_bytes(b"")
    assert checkpoint_paths(str(odd)) == [odd]
    assert checkpoint_paths([odd, "x.pt"]) == [odd, Path("x.pt")]


def test_members_with_other_vocabularies_are_refused_naming_the_file(members, tmp_path):
    paths, *_ = members
    state = load_checkpoint(paths[1])
    proto = state["task"]["tgt_tokenizer"]["model_proto"].clone()
    proto[-1] ^= 1  # one byte of the target side's sentencepiece model differs
    state["task"]["tgt_tokenizer"]["model_proto"] = proto
    other = tmp_path / "other.pt"
    save_checkpoint(state, other)
    with pytest.raises(ConfigError, match=f"cannot ensemble {paths[0]} with {other}: their target tokenizers"):
        load_ensemble_for_inference([paths[0], other])


def test_exit_policies_and_single_member_ensembles_are_refused(members):
    _, task, models, _ = members
    with pytest.raises(ConfigError, match="exit policies decode one model's blocks"):
        Translator(task, EnsembleModel(models), GenerationConfig(exit_policy={"_name": "fixed_depth", "block": 1}))
    with pytest.raises(ConfigError, match="at least two models"):
        EnsembleModel(models[:1])


def test_max_positions_is_the_smallest_members(members):
    _, _, models, _ = members
    assert EnsembleModel(models).max_positions() == models[0].max_positions()
    shorter = copy.deepcopy(models[0])
    shorter.max_positions = lambda: (10, 12)  # a member with fewer positions, in either order
    assert EnsembleModel([shorter, models[1]]).max_positions() == (10, 12)
    assert EnsembleModel([models[1], shorter]).max_positions() == (10, 12)
    assert math.isclose(sum(p.numel() for p in EnsembleModel(models).parameters()),
                        sum(m.num_parameters() for m in models))
