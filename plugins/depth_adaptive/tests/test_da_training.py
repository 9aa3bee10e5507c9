"""End to end on the toy corpus: aligned training learns at every block, and its checkpoint
decodes with early exits, and without the plugin at full depth."""

from __future__ import annotations

import json

import pytest

from depth_adaptive.policies import ConfidenceConfig, ConfidenceExit
from depth_adaptive.tune import main as tune_exits
from depth_adaptive.tuning import TuningFileError
from toolkit.checkpoint import load_checkpoint
from toolkit.config import compose_train_config
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.translator import Translator
from toolkit.plugins import load_plugins
from toolkit.training.train import train

SOURCES = ["the small dog sees a red ball", "every cat sleeps near the old house", "some birds sing today"]


def test_aligned_training_learns_at_every_block_and_decodes_with_exits(session, tmp_path):
    cfg = compose_train_config([
        "criterion=depth_adaptive", "model.decoder_layers=3", "task.toy_pairs=1000", "task.vocab_size=200", "common.threads=1",
        "dataset.max_positions=64", "dataset.max_tokens=512", "optimization.max_epoch=3", "optim.lr=5e-3",
        "lr_scheduler.warmup_updates=30", "common.log_format=none", "common.tensorboard_dir=null",
        f"checkpoint.save_dir={tmp_path}"])
    result = train(cfg, session)
    first, last = result["valid"][0], result["valid"][-1]
    for block in (1, 2, 3):  # every exit learns
        assert last[f"nll_block{block}"] < first[f"nll_block{block}"]
    path = tmp_path / "checkpoint_last.pt"
    assert load_checkpoint(path)["plugins"]["roles"] == {"depth_adaptive": "training"}

    policy = {"_name": "confidence", "threshold": 0.3}
    translator = Translator.from_checkpoint(path, GenerationConfig(beam=2, exit_policy=policy), "cpu", session)
    translations = translator.translate(SOURCES)
    assert all(t.text for t in translations)
    assert 1.0 <= translator.generator.average_exit() < 3.0  # some tokens left early

    core_only = load_plugins(autoload=False)  # trained with the plugin's criterion, decodes without it
    full_depth = Translator.from_checkpoint(path, GenerationConfig(beam=2), "cpu", core_only).translate(SOURCES)
    assert all(t.text for t in full_depth)

    # thresholds tuned on the valid split round-trip through their file
    tuned = tmp_path / "confidence.json"
    assert tune_exits([str(path), "--policy", "confidence", "--output", str(tuned), "--samples", "2", "--limit",
                       "20", "--beam", "2", "--device", "cpu"]) == 0
    record = json.loads(tuned.read_text())
    assert len(record["samples"]) == 6 and record["frontier"] and record["full_depth"]["average_exit"] == 3.0
    assert record["chosen"]["bleu"] >= record["full_depth"]["bleu"] - 0.3 or record["chosen"] == max(
        record["samples"], key=lambda p: p["bleu"])
    model = translator.model
    assert ConfidenceExit(ConfidenceConfig(tuned=str(tuned)), model).thresholds == record["settings"]["thresholds"]
    # tuned on a bf16 copy of the weights: the file says so and serves the fp32 model too
    tuned_bf16 = tmp_path / "confidence_bf16.json"
    assert tune_exits([str(path), "--policy", "confidence", "--output", str(tuned_bf16), "--samples", "1", "--limit",
                       "20", "--beam", "2", "--device", "cpu", "--precision", "bf16", "--chance", "0.5"]) == 0
    record_bf16 = json.loads(tuned_bf16.read_text())
    assert record_bf16["precision"] == "bf16" and record_bf16["model"] == record["model"]
    assert all(0.0 <= p["chance"] <= 1.0 for p in record_bf16["samples"]) and "bootstrap" in record_bf16["rule"]
    assert "chance" not in record_bf16["settings"]
    ConfidenceExit(ConfidenceConfig(tuned=str(tuned_bf16)), model)
    old_format = tmp_path / "old.json"
    old_format.write_text(json.dumps({**record, "format": "toolkit-tuned-exits/1"}))
    with pytest.raises(TuningFileError, match="older toolkit-tune-exits .* tune again"):
        ConfidenceExit(ConfidenceConfig(tuned=str(old_format)), model)
    other = Translator.from_checkpoint(tmp_path / "checkpoint1.pt", GenerationConfig(), "cpu", session).model
    with pytest.raises(TuningFileError, match="tuned for another model"):
        ConfidenceExit(ConfidenceConfig(tuned=str(tuned)), other)
    with pytest.raises(TuningFileError, match="thresholds of the confidence policy, not entropy"):
        from depth_adaptive.policies import EntropyConfig, EntropyExit
        EntropyExit(EntropyConfig(tuned=str(tuned)), model)
