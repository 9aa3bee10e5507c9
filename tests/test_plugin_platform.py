"""The plugin platform's mechanisms, each used by a small test plugin: typed plugin options,
plugin roles in checkpoints, the inference-checkpoint writer, device/dtype constraints, and
the hooks ``toolkit_weights_loaded``, ``toolkit_train_begin`` and validation through
``toolkit_train_step``."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from toolkit import hookimpl
from toolkit.checkpoint import CheckpointError, count_parameters, load_checkpoint, save_inference_checkpoint
from toolkit.config import ConfigError, compose_train_config, parse_plugin_options
from toolkit.criterions.label_smoothed_cross_entropy import LabelSmoothedCEConfig, LabelSmoothedCrossEntropy
from toolkit.devices import PlacementError
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.translator import Translator
from toolkit.inference import load_for_inference
from toolkit.plugins import PluginError, load_plugins
from toolkit.training.train import train

SMALL = ["task.toy_pairs=300", "task.vocab_size=200", "dataset.max_positions=64", "dataset.max_tokens=512",
         "common.log_format=none", "common.tensorboard_dir=null", "optimization.max_update=3"]
SOURCES = ["the small dog sees a red ball", "every cat sleeps near the old house"]


# --- test plugins -----------------------------------------------------------------------------


@dataclass
class HeadOptions:
    size: int = 4
    init: float = 0.5
    tags: list[str] = field(default_factory=list)


class ExtraHead:
    """Shapes the model: adds a head (``role="model"``) sized by its typed options."""

    @hookimpl
    def toolkit_register(self, registries):
        registries.plugin_options.add("head", HeadOptions, role="model")

    @hookimpl
    def toolkit_modify_model(self, model, cfg):
        if "head" in cfg.plugins.options:
            model.extra_head = torch.nn.Linear(cfg.plugins.options.head.size, 2)


@dataclass
class SoftCEConfig(LabelSmoothedCEConfig):
    _name: str = "soft_ce"


@dataclass
class SoftOptions:
    temperature: float = 2.0


class SoftTargets:
    """Only trains (``role="training"``): a criterion and a step wrapper, like distillation."""

    def __init__(self):
        self.validating = []

    @hookimpl
    def toolkit_register(self, registries):
        registries.criterion.add("soft_ce", LabelSmoothedCrossEntropy, SoftCEConfig)
        registries.plugin_options.add("soft", SoftOptions, role="training")

    @hookimpl(wrapper=True)
    def toolkit_train_step(self, model, validating):
        self.validating.append((validating, model.training, torch.is_grad_enabled()))
        return (yield)


class Recorder:
    """Records ``toolkit_weights_loaded`` and ``toolkit_train_begin``; freezes the encoder."""

    def __init__(self):
        self.origins, self.begins = [], []

    @hookimpl
    def toolkit_weights_loaded(self, model, origin):
        self.origins.append(origin)
        for p in model.encoder.parameters():
            p.requires_grad_(False)

    @hookimpl
    def toolkit_train_begin(self, trainer):
        optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
        self.begins.append((trainer.num_updates, any(id(p) in optimized for p in trainer.module.encoder.parameters())))


class CpuOnlyModule(torch.nn.Module):
    supported_devices = ("cpu",)
    supported_dtypes = (torch.float32,)


class CpuOnly:
    @hookimpl
    def toolkit_prepare_inference(self, model):
        model.int8_like = CpuOnlyModule()


def _session(*plugins):
    return load_plugins(autoload=False, extra=list(plugins))


def _train(session, save_dir: Path, *overrides: str) -> dict:
    return train(compose_train_config([*SMALL, f"checkpoint.save_dir={save_dir}", *overrides]), session)


@pytest.fixture(scope="module")
def core_run(tmp_path_factory) -> Path:
    """A few updates of the core model: the checkpoint the inference tests start from."""
    save_dir = tmp_path_factory.mktemp("core-run")
    _train(_session(), save_dir)
    return save_dir / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def head_run(tmp_path_factory) -> tuple[Path, dict]:
    """A run with the model-shaping plugin and ``+plugins.options.head.size=6``."""
    save_dir = tmp_path_factory.mktemp("head-run")
    result = _train(_session(("head", ExtraHead())), save_dir, "+plugins.options.head.size=6")
    return save_dir, result


# --- typed plugin options ---------------------------------------------------------------------


def test_plugin_options_are_typed_and_their_defaults_written(head_run):
    save_dir, result = head_run
    written = OmegaConf.load(save_dir / "config.yaml").plugins.options.head
    assert OmegaConf.to_container(written) == {"size": 6, "init": 0.5, "tags": []}
    assert result["model"].extra_head.in_features == 6  # the plugin read the typed value
    state = load_checkpoint(save_dir / "checkpoint_last.pt")
    assert state["plugins"]["roles"] == {"head": "model"}
    assert state["model"]["extra_head.weight"].shape == (2, 6)


@pytest.mark.parametrize("override, message", [
    ("+plugins.options.head.sise=6", r"unknown option\(s\) sise for plugin head .*its options are: size, init, tags"),
    ("+plugins.options.head.size=six", r"plugins\.options\.head\.size: Value 'six' .* could not be converted to Integer"),
    ("+plugins.options.head.tags=3", r"plugins\.options\.head\.tags"),
])
def test_a_bad_plugin_option_fails_before_any_work(clean_config_store, tmp_path, override, message):
    session = _session(("head", ExtraHead()))
    with pytest.raises(ConfigError, match=message):
        _train(session, tmp_path / "run", override)
    assert not (tmp_path / "run").exists()


def test_generation_plugin_options_are_typed_too(clean_config_store, head_run):
    session = _session(("head", ExtraHead()))
    path = head_run[0] / "checkpoint_last.pt"
    with pytest.raises(ConfigError, match=r"unknown option\(s\) colour .*its options are: size, init, tags"):
        load_for_inference(path, session, "cpu", {"head": {"colour": 1}})
    with pytest.raises(ConfigError, match=r"plugin_options\.head\.init: Value 'warm'"):
        load_for_inference(path, session, "cpu", {"head": {"init": "warm"}})
    cfg, _, model, _ = load_for_inference(path, session, "cpu", {"head": {"tags": ["x"]}})
    assert cfg.plugins.options.head.size == 6 and list(cfg.plugins.options.head.tags) == ["x"]


def test_parse_plugin_options_reads_dotted_keys_as_yaml():
    assert parse_plugin_options(["layerdrop.keep=[0,2]", "layerdrop.rate=0.2", "q.scheme=int8"]) == {
        "layerdrop": {"keep": [0, 2], "rate": 0.2}, "q": {"scheme": "int8"}}
    for bad in ("layerdrop=1", "keep", ".x=1"):
        with pytest.raises(ConfigError, match="PLUGIN.KEY=VALUE"):
            parse_plugin_options([bad])


def test_options_registry_rejects_bad_registrations(clean_config_store):
    class Bad:
        @hookimpl
        def toolkit_register(self, registries):
            registries.plugin_options.add("someone_else", HeadOptions)

    with pytest.raises(PluginError, match="cannot register options for plugin 'someone_else'"):
        _session(("bad", Bad()))


# --- roles: inference needs only the plugins that shape the model ----------------------------


def test_a_training_only_plugin_is_not_needed_to_decode(clean_config_store, tmp_path):
    soft = SoftTargets()
    session = _session(("soft", soft))
    _train(session, tmp_path / "run", "criterion=soft_ce", "+plugins.options.soft.temperature=3.0")
    path = tmp_path / "run" / "checkpoint_last.pt"
    state = load_checkpoint(path)
    assert state["plugins"]["roles"] == {"soft": "training"}
    assert state["plugins"]["providers"]["criterion"] == "soft"
    # validation went through the same hook: eval mode, no gradients, told apart
    assert (True, False, False) in soft.validating and (False, True, True) in soft.validating

    core_only = _session()
    _, _, model, _ = load_for_inference(path, core_only, "cpu")
    translations = Translator.from_checkpoint(path, GenerationConfig(beam=2), "cpu", core_only).translate(SOURCES)
    assert all(t.text for t in translations)
    with pytest.raises(PluginError, match=r"soft \(not installed\)"):  # resuming it still needs the plugin
        _train(core_only, tmp_path / "run", "criterion=label_smoothed_cross_entropy", "optimization.max_update=4")


def test_a_model_shaping_plugin_is_needed_and_named(clean_config_store, head_run):
    with pytest.raises(PluginError, match=r"to rebuild its model.*head \(not installed\)"):
        load_for_inference(head_run[0] / "checkpoint_last.pt", _session(), "cpu")


# --- inference checkpoints --------------------------------------------------------------------


def test_inference_checkpoint_of_a_pruned_model_is_smaller_and_loads(clean_config_store, core_run, tmp_path):
    session = _session()
    cfg, task, model, _ = load_for_inference(core_run, session, "cpu")
    full_bytes = save_inference_checkpoint(tmp_path / "full.pt", cfg, task, model, session)
    tied = model.decoder.output_projection.weight is model.decoder.embedding.embed_tokens.weight
    assert tied and count_parameters(model.state_dict()) == model.num_parameters()  # a tied matrix once
    block_params = sum(p.numel() for p in model.decoder.layers[1].parameters())

    del model.decoder.layers[1:]
    with pytest.raises(CheckpointError, match="does not describe this model"):  # depth not recorded
        save_inference_checkpoint(tmp_path / "bad.pt", cfg, task, model, session)
    assert not (tmp_path / "bad.pt").exists()
    cfg.model.decoder_layers = 1
    pruned_bytes = save_inference_checkpoint(tmp_path / "pruned.pt", cfg, task, model, session, pruned_from="x")
    assert pruned_bytes == (tmp_path / "pruned.pt").stat().st_size
    assert full_bytes - pruned_bytes >= 4 * block_params  # float32 weights of the removed block

    _, _, reloaded, state = load_for_inference(tmp_path / "pruned.pt", session, "cpu")
    assert len(reloaded.decoder.layers) == 1 and state["pruned_from"] == "x" and "optimizer" not in state
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))


# --- devices and dtypes -----------------------------------------------------------------------


def test_impossible_device_or_dtype_is_refused_before_moving(clean_config_store, core_run):
    path = core_run
    session = _session(("cpu_only", CpuOnly()))
    with pytest.raises(PlacementError, match=r"int8_like \(CpuOnlyModule\) runs only on cpu, not cuda"):
        load_for_inference(path, session, "cuda")
    with pytest.raises(PlacementError, match=r"runs only in float32, not float16"):
        load_for_inference(path, session, "cpu", precision="fp16")
    _, _, model, _ = load_for_inference(path, _session(), "cpu", precision="bf16")  # no constraint: converted
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        load_for_inference(path, _session(), "cpu", precision="int4")


# --- hooks ------------------------------------------------------------------------------------


def test_weights_loaded_runs_before_the_optimizer_and_train_begin_after_resume(clean_config_store, core_run,
                                                                              tmp_path, caplog):
    parent = load_checkpoint(core_run)["model"]
    recorder = Recorder()
    session = _session(("recorder", recorder))
    child = tmp_path / "child"
    same_data = f"task.destdir={core_run.parent / 'data-bin'}"
    with caplog.at_level("INFO", logger="toolkit.train"):
        _train(session, child, same_data, f"checkpoint.finetune_from={core_run}")
    # the run ends by naming its best checkpoint and the command that translates with it
    assert f"best checkpoint: {child / 'checkpoint_best.pt'} (valid loss " in caplog.text
    assert f"toolkit-generate path={child / 'checkpoint_best.pt'} split=test" in caplog.text
    weights = load_checkpoint(child / "checkpoint_last.pt")["model"]
    # frozen in the hook, before the optimizer was built: the encoder kept the parent's weights
    assert all(torch.equal(weights[k], parent[k]) for k in parent if k.startswith("encoder."))
    assert not all(torch.equal(weights[k], parent[k]) for k in parent if k.startswith("decoder.layers"))
    _train(session, child, same_data, "optimization.max_update=5")  # resume
    load_for_inference(child / "checkpoint_last.pt", session, "cpu")
    assert recorder.origins == ["finetune", "resume", "inference"]
    assert recorder.begins == [(0, False), (3, False)]  # once per run, after the resumed state loaded


def test_the_inference_path_does_not_import_the_training_loop():
    code = ("import sys, toolkit.inference, toolkit.generation.translator, toolkit.cli.generate, "
            "toolkit.cli.export_ct2; print([m for m in sys.modules if m.startswith('toolkit.training')])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
