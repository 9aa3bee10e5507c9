"""What plugins get at inference: ``plugin_options`` merged into the checkpoint's config and
``toolkit_prepare_inference`` on the loaded model (LayerDrop pruning and int8 quantization
build on these)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit import hookimpl
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.translator import Translator
from toolkit.inference import load_for_inference
from toolkit.plugins import PluginError, load_plugins
from toolkit.checkpoint import load_checkpoint

GENERATE = Path(sys.executable).parent / "toolkit-generate"
SOURCES = ["the small dog sees a red ball", "every cat sleeps near the old house", "some birds sing today"]


class KeepFirstDecoderLayers:
    """Prunes the decoder to its first ``plugins.options.keep_first.decoder_layers`` blocks."""

    def __init__(self):
        self.seen_weights = None

    @hookimpl
    def toolkit_prepare_inference(self, model, cfg):
        keep = cfg.plugins.options.keep_first.decoder_layers
        self.seen_weights = model.decoder.layers[0].self_attn.qkv_proj.weight.detach().clone()
        model.decoder.layers = model.decoder.layers[:keep]


@pytest.fixture
def pruning_session(clean_config_store):
    plugin = KeepFirstDecoderLayers()
    return plugin, load_plugins(autoload=False, extra=[("keep_first", plugin)])


def test_prepare_inference_sees_trained_weights_and_its_change_is_used(trained_run, pruning_session):
    plugin, session = pruning_session
    path = trained_run / "checkpoint_last.pt"
    trained = load_checkpoint(path)["model"]
    full_cfg, task, full, _ = load_for_inference(path, session, "cpu", {"keep_first": {"decoder_layers": 2}})
    _, _, pruned, _ = load_for_inference(path, session, "cpu", {"keep_first": {"decoder_layers": 1}})

    # the hook ran after the weights were loaded, with the options merged into the config
    assert torch.equal(plugin.seen_weights, trained["decoder.layers.0.self_attn.qkv_proj.weight"])
    assert full_cfg.plugins.options.keep_first.decoder_layers == 2
    assert len(full.decoder.layers) == 2 and len(pruned.decoder.layers) == 1
    removed = sum(p.numel() for p in full.decoder.layers[1].parameters())
    assert pruned.num_parameters() == full.num_parameters() - removed > 0

    # decoding really runs through the pruned model
    gen_cfg = GenerationConfig(beam=1)
    full_out = Translator(task, full, gen_cfg, session).translate(SOURCES)
    pruned_out = Translator(task, pruned, gen_cfg, session).translate(SOURCES)
    assert [t.hypotheses[0].score for t in full_out] != [t.hypotheses[0].score for t in pruned_out]


def test_options_for_a_plugin_that_is_not_loaded_fail_clearly(trained_run, pruning_session, tmp_path):
    _, session = pruning_session
    path = trained_run / "checkpoint_last.pt"
    with pytest.raises(PluginError, match="layerdorp.*not installed"):
        load_for_inference(path, session, "cpu", {"layerdorp": {"decoder_layers_to_keep": [0]}})

    # a checkpoint configured by a plugin cannot be rebuilt without it
    state = load_checkpoint(path)
    state["cfg"]["plugins"]["options"] = {"gone": {"rate": 0.2}}
    orphan = tmp_path / "orphan.pt"
    torch.save(state, orphan)
    with pytest.raises(PluginError, match=r"checkpoint .*orphan\.pt.*gone"):
        load_for_inference(orphan, session, "cpu")


def test_generate_command_rejects_options_for_unknown_plugins(trained_run, tmp_path):
    result = subprocess.run([str(GENERATE), f"path={trained_run / 'checkpoint_last.pt'}",
                             f"output={tmp_path / 'out.txt'}", "+plugin_options.layerdorp.rate=0.2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "layerdorp (not installed)" in result.stderr
    assert not (tmp_path / "out.txt").exists()
