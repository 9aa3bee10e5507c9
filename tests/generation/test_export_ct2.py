"""CTranslate2 export: a real, loadable CT2 model that decodes as ours does."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit.data.preprocess import read_lines
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.translator import Translator
from toolkit.inference import load_for_inference

ctranslate2 = pytest.importorskip("ctranslate2")
from toolkit.export.ctranslate2 import detokenize, export_checkpoint, source_pieces  # noqa: E402


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    checkpoint = trained_run / "checkpoint_best.pt"
    return checkpoint, export_checkpoint(checkpoint, tmp_path_factory.mktemp("ct2") / "model")


def test_greedy_translations_and_token_scores_match_ours(exported, trained_run):
    checkpoint, model_dir = exported
    _, task, model, _ = load_for_inference(checkpoint, device="cpu")
    sources = read_lines(trained_run / "data-bin" / "toy-text" / "test.src")[:120]
    ours = Translator(task, model, GenerationConfig(beam=1)).translate(sources)
    ct2 = ctranslate2.Translator(str(model_dir), device="cpu", intra_threads=1)
    results = ct2.translate_batch(source_pieces(task, sources), beam_size=1, max_decoding_length=256)
    for source_ids, mine, theirs in zip(task.src_tokenizer.encode(sources), ours, results, strict=True):
        mine_pieces = task.tgt_dict.symbols_of(mine.hypotheses[0].tokens.tolist())
        limit = int((len(source_ids) + 1) * 1.2 + 10)  # ours: max_len_a * |source + </s>| + max_len_b
        if len(mine_pieces) >= limit:  # a looping hypothesis ours cut at its limit; CT2 stops at 256
            assert theirs.hypotheses[0][: len(mine_pieces)] == mine_pieces
        else:
            assert theirs.hypotheses[0] == mine_pieces
            assert detokenize(task, theirs.hypotheses[0]) == mine.text
    # CT2's log-probabilities of our hypotheses (each ends in </s>) equal ours
    targets = [task.tgt_dict.symbols_of(t.hypotheses[0].tokens.tolist()) for t in ours]
    scored = ct2.score_batch(source_pieces(task, sources), targets)
    for ours_one, theirs_one in zip(ours, scored, strict=True):
        expected = ours_one.hypotheses[0].positional_scores
        torch.testing.assert_close(torch.tensor(theirs_one.log_probs), expected.float(), atol=1e-3, rtol=0)


def test_sentencepiece_models_travel_with_the_export_and_int8_is_smaller(exported, tmp_path):
    checkpoint, model_dir = exported
    _, task, _, _ = load_for_inference(checkpoint, device="cpu")
    assert (model_dir / "source.spm").is_file() and (model_dir / "target.spm").is_file()
    int8_dir = export_checkpoint(checkpoint, tmp_path / "int8", quantization="int8")
    full, small = (d / "model.bin" for d in (model_dir, int8_dir))
    assert small.stat().st_size < 0.5 * full.stat().st_size
    translator = ctranslate2.Translator(str(int8_dir), device="cpu", compute_type="int8")
    assert translator.translate_batch(source_pieces(task, ["the dog sleeps"]), beam_size=2)[0].hypotheses[0]


def test_cli_refuses_to_overwrite_and_reports_a_missing_checkpoint(exported, tmp_path, capsys):
    checkpoint, model_dir = exported
    cli = [str(Path(sys.executable).parent / "toolkit-export-ct2")]
    result = subprocess.run([*cli, str(checkpoint), str(model_dir)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "already exists" in result.stderr
    # the same command's main() in process
    from toolkit.cli.export_ct2 import main

    try:
        status = main([str(tmp_path / "nope.pt"), str(tmp_path / "out")])
    except SystemExit as exit_:
        status = exit_.code
    assert status == 1 and "does not exist" in capsys.readouterr().err and not (tmp_path / "out").exists()
