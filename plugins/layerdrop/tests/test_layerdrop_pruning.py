"""Training with LayerDrop, then pruning: the pruned file holds exactly the kept blocks, loads
without the plugin, computes what the full model computes with only those blocks, and equals
pruning at load time; bad indices are refused by name and an interrupted prune writes nothing."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from toolkit.checkpoint import load_checkpoint
from toolkit.errors import ConfigError
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.translator import Translator
from toolkit.plugins import load_plugins

from layerdrop.prune import main as prune_main
from layerdrop.valid_loss import make_batches

from layerdrop_testing import session

SOURCES = ["the small dog sees a red ball", "every cat sleeps near the old house", "some birds sing today"]


def prune(*args) -> None:
    assert prune_main([str(a) for a in args]) == 0


def block_parameters(weights: dict, side: str, block: int) -> int:
    return sum(t.numel() for k, t in weights.items() if k.startswith(f"{side}.layers.{block}."))


def test_a_layerdrop_checkpoint_loads_without_the_plugin(layerdrop_run, clean_config_store):
    state = load_checkpoint(layerdrop_run / "checkpoint_last.pt")
    assert state["plugins"]["roles"] == {"layerdrop": "training"}
    assert state["cfg"]["plugins"]["options"]["layerdrop"]["decoder_rate"] == 0.5
    core_only = load_plugins(autoload=False)
    translations = Translator.from_checkpoint(layerdrop_run / "checkpoint_last.pt", GenerationConfig(beam=2), "cpu",
                                              core_only).translate(SOURCES)
    assert len(translations) == 3


def test_the_pruned_file_keeps_exactly_the_kept_blocks_and_computes_as_they_do(layerdrop_run, tmp_path,
                                                                               clean_config_store):
    full_path, pruned_path = layerdrop_run / "checkpoint_last.pt", tmp_path / "pruned.pt"
    prune(full_path, pruned_path, "--encoder-layers-to-keep", "0,2", "--decoder-layers-to-keep", "1,3")
    full, pruned = load_checkpoint(full_path), load_checkpoint(pruned_path)
    assert pruned["cfg"]["model"]["encoder_layers"] == pruned["cfg"]["model"]["decoder_layers"] == 2
    assert pruned["pruned_from"]["decoder_layers"] == [1, 3] and pruned["pruned_from"]["depth"]["decoder"] == 4
    removed = sum(block_parameters(full["model"], side, b) for side, b in
                  [("encoder", 1), ("encoder", 3), ("decoder", 0), ("decoder", 2)])
    assert sum(t.numel() for t in pruned["model"].values()) == sum(t.numel() for t in full["model"].values()) - removed
    assert torch.equal(pruned["model"]["decoder.layers.0.ffn.fc1.weight"], full["model"]["decoder.layers.1.ffn.fc1.weight"])
    assert os.path.getsize(pruned_path) < 0.9 * os.path.getsize(full_path)

    core_only = load_plugins(autoload=False)  # the pruned file needs no plugin
    small = Translator.from_checkpoint(pruned_path, GenerationConfig(beam=2), "cpu", core_only)
    big = Translator.from_checkpoint(full_path, GenerationConfig(beam=2), "cpu", core_only)
    for side, kept in (("encoder", [0, 2]), ("decoder", [1, 3])):
        stack = getattr(big.model, side)
        stack.layers = nn.ModuleList([stack.layers[i] for i in kept])
    batch = make_batches(small.task, SOURCES, SOURCES, small.model.max_positions())[0]
    inputs = (batch["src_tokens"], batch["src_lengths"], batch["prev_output_tokens"])
    with torch.no_grad():
        torch.testing.assert_close(small.model(*inputs).logits, big.model(*inputs).logits)

    at_load = Translator.from_checkpoint(full_path, GenerationConfig(beam=2), "cpu", session(), plugin_options={
        "layerdrop": {"encoder_layers_to_keep": [0, 2], "decoder_layers_to_keep": [1, 3]}})
    assert at_load.model.num_parameters() == small.model.num_parameters()
    assert [t.text for t in at_load.translate(SOURCES)] == [t.text for t in small.translate(SOURCES)]


def test_a_pruned_file_exports_to_ctranslate2_and_decodes_as_ours(layerdrop_run, tmp_path, clean_config_store):
    ctranslate2 = pytest.importorskip("ctranslate2")
    from toolkit.export.ctranslate2 import detokenize, export_checkpoint, source_pieces

    pruned_path = tmp_path / "pruned.pt"
    prune(layerdrop_run / "checkpoint_last.pt", pruned_path, "--keep", "every-other")
    exported = export_checkpoint(pruned_path, tmp_path / "ct2")  # the core alone reads the pruned config
    ours = Translator.from_checkpoint(pruned_path, GenerationConfig(beam=1), "cpu", load_plugins(autoload=False))
    theirs = ctranslate2.Translator(str(exported), device="cpu", intra_threads=1).translate_batch(
        source_pieces(ours.task, SOURCES), beam_size=1, max_decoding_length=64)
    for source_ids, mine, result in zip(ours.task.src_tokenizer.encode(SOURCES), ours.translate(SOURCES), theirs):
        pieces = ours.task.tgt_dict.symbols_of(mine.hypotheses[0].tokens.tolist())
        if len(pieces) >= int((len(source_ids) + 1) * 1.2 + 10):  # ours cut a looping hypothesis at its limit
            assert result.hypotheses[0][: len(pieces)] == pieces
        else:
            assert result.hypotheses[0] == pieces and detokenize(ours.task, result.hypotheses[0]) == mine.text


def test_strategies_choose_blocks(layerdrop_run, tmp_path, clean_config_store):
    path = layerdrop_run / "checkpoint_last.pt"
    prune(path, tmp_path / "every-other.pt", "--keep", "every-other")
    assert load_checkpoint(tmp_path / "every-other.pt")["pruned_from"]["encoder_layers"] == [0, 2]
    prune(path, tmp_path / "first.pt", "--keep", "first:3", "--decoder-layers-to-keep", "3")
    record = load_checkpoint(tmp_path / "first.pt")["pruned_from"]
    assert record["encoder_layers"] == [0, 1, 2] and record["decoder_layers"] == [3]
    data = layerdrop_run / "data-bin" / "toy-text"
    prune(path, tmp_path / "greedy.pt", "--keep", "greedy:2", "--valid-source", data / "valid.src",
          "--valid-target", data / "valid.tgt", "--valid-limit", "40")
    assert len(load_checkpoint(tmp_path / "greedy.pt")["pruned_from"]["decoder_layers"]) == 2
    # pruned again: indices count the pruned file's blocks, mapped back to the original ones
    prune(tmp_path / "every-other.pt", tmp_path / "again.pt", "--decoder-layers-to-keep", "1")
    assert load_checkpoint(tmp_path / "again.pt")["pruned_from"]["decoder_layers"] == [2]


@pytest.mark.parametrize("indices, message", [
    ("0,4", "block 4 is out of range; the model has 4 decoder blocks"),
    ("1,1", "block 1 is listed more than once"),
    ("", "the list is empty"),
])
def test_bad_indices_are_refused_by_name(layerdrop_run, tmp_path, indices, message, capsys, clean_config_store):
    with pytest.raises(SystemExit):
        prune(layerdrop_run / "checkpoint_last.pt", tmp_path / "out.pt", "--decoder-layers-to-keep", indices)
    assert message in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_old_indices_on_a_pruned_file_and_an_interrupted_prune(layerdrop_run, tmp_path, capsys, monkeypatch,
                                                               clean_config_store):
    prune(layerdrop_run / "checkpoint_last.pt", tmp_path / "pruned.pt", "--decoder-layers-to-keep", "0,1")
    with pytest.raises(SystemExit):  # the original model's indices, given again
        prune(tmp_path / "pruned.pt", tmp_path / "again.pt", "--decoder-layers-to-keep", "0,1")
    assert "decoder layers to keep [0, 1]: this checkpoint was already pruned to these blocks" in (
        capsys.readouterr().err)
    with pytest.raises(SystemExit):
        prune(tmp_path / "pruned.pt", tmp_path / "again.pt", "--decoder-layers-to-keep", "0,3")
    assert ("block 3 is out of range; the model has 2 decoder blocks (0..1); it was pruned from 4+4 blocks "
            "(kept encoder [0, 1, 2, 3], decoder [0, 1])") in capsys.readouterr().err

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prune(layerdrop_run / "checkpoint_last.pt", tmp_path / "out.pt", "--keep", "every-other")
    assert sorted(os.listdir(tmp_path)) == ["pruned.pt"]


def test_a_rate_outside_zero_one_stops_training_before_it_starts(tmp_path, clean_config_store):
    from toolkit.training.train import train

    from layerdrop_testing import small_config

    with pytest.raises(ConfigError, match="encoder_rate must be in"):
        train(small_config("+plugins.options.layerdrop.encoder_rate=1.0", f"checkpoint.save_dir={tmp_path}"),
              session())
