"""Behaviour of the plugin manager (toolkit.plugins): core, discovery, provenance, hooks."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from toolkit import hookimpl
from toolkit.plugins import CORE, DISABLE_AUTOLOAD_ENV, ENTRY_POINT_GROUP, PluginError, load_plugins

TOOLKIT_TRAIN = Path(sys.executable).parent / "toolkit-train"
PLUGIN_VERSION = "0.3.1"
# plugins installed in this environment (the built-in ones under plugins/), which autoload finds too
INSTALLED = {entry_point.name for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _loaded_here(session) -> list[str]:
    """The session's plugins other than those installed in this environment."""
    return [name for name in session.loaded() if name not in INSTALLED]

TESTPLUG_SOURCE = '''
"""A third-party toolkit plugin: a tiny Transformer architecture and a plain cross-entropy."""

from dataclasses import dataclass

import torch.nn.functional as F

from toolkit import hookimpl
from toolkit.criterions.base import Criterion
from toolkit.models.transformer import TransformerConfig


@dataclass
class TestplugCEConfig:
    _name: str = "testplug_ce"


class TestplugCrossEntropy(Criterion):
    """Cross-entropy summed over non-padding targets."""

    def __init__(self, cfg, padding_idx):
        super().__init__()
        self.padding_idx = padding_idx

    def forward(self, model, sample):
        logits = model(**sample["net_input"]).logits
        lprobs = model.log_probs(logits).view(-1, logits.size(-1))
        loss = F.nll_loss(lprobs, sample["target"].view(-1), ignore_index=self.padding_idx, reduction="sum")
        ntokens = sample["ntokens"]
        return loss, ntokens, {"loss": loss.detach(), "nll_loss": loss.detach(), "ntokens": ntokens,
                               "nsentences": sample["nsentences"], "sample_size": ntokens}


def testplug_tiny():
    return TransformerConfig(encoder_layers=1, decoder_layers=1, encoder_embed_dim=32, decoder_embed_dim=32,
                             encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2,
                             decoder_attention_heads=2, max_source_positions=64, max_target_positions=64)


@dataclass
class TestplugOptions:
    keep_decoder_layers: int = 0  # prune the decoder to its first N blocks at inference (0: keep all)


@hookimpl
def toolkit_register(registries):
    registries.register_architecture("transformer", "testplug_tiny")(testplug_tiny)
    registries.criterion.add("testplug_ce", TestplugCrossEntropy, TestplugCEConfig)
    registries.plugin_options.add("testplug", TestplugOptions, role="training")


@hookimpl
def toolkit_prepare_inference(model, cfg):
    keep = cfg.plugins.options.get("testplug", {}).get("keep_decoder_layers", 0)
    if keep:
        del model.decoder.layers[keep:]
'''

BROKEN_SOURCE = '''
raise ImportError("brokenplug needs the frobnicator library")
'''


def _write_package(root: Path, dist: str, module: str, entry_point: str, source: str) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=70"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "{PLUGIN_VERSION}"
        dependencies = []

        [project.entry-points."toolkit.plugins"]
        {entry_point} = "{module}"

        [tool.setuptools]
        py-modules = ["{module}"]
    '''))
    (root / f"{module}.py").write_text(source)
    return root


def _pip_install(package: Path, target: Path) -> Path:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--no-index", "--target", str(target), str(package)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return target


@pytest.fixture(scope="module")
def testplug_site(tmp_path_factory) -> Path:
    """The ``toolkit-test-plugin`` distribution, really built and installed into its own folder."""
    tmp = tmp_path_factory.mktemp("testplug")
    package = _write_package(tmp / "pkg", "toolkit-test-plugin", "toolkit_test_plugin", "testplug",
                             TESTPLUG_SOURCE)
    site = _pip_install(package, tmp / "site")
    assert list(site.glob("toolkit_test_plugin-*.dist-info/entry_points.txt"))
    return site


@pytest.fixture(scope="module")
def brokenplug_site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("brokenplug")
    package = _write_package(tmp / "pkg", "toolkit-broken-plugin", "toolkit_broken_plugin", "brokenplug",
                             BROKEN_SOURCE)
    return _pip_install(package, tmp / "site")


@pytest.fixture
def on_sys_path(monkeypatch, clean_config_store):
    """Put an install folder on ``sys.path`` for this test only (entry points included)."""

    def add(site: Path) -> None:
        monkeypatch.syspath_prepend(str(site))  # also invalidates importlib's caches
        importlib.invalidate_caches()

    yield add
    importlib.invalidate_caches()
    for module in ("toolkit_test_plugin", "toolkit_broken_plugin"):
        sys.modules.pop(module, None)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", DISABLE_AUTOLOAD_ENV)}
    env.update(extra)
    return env


def _train(tmp: Path, overrides: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(TOOLKIT_TRAIN), *overrides], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=300)


def _small_run(save_dir: Path) -> list[str]:
    return ["task.toy_pairs=300", "optimization.max_update=3", "dataset.max_tokens=512",
            "dataset.max_positions=64", "task.vocab_size=200", f"checkpoint.save_dir={save_dir}",
            "common.log_format=simple"]


# --- the core ---------------------------------------------------------------------------------


def test_without_autoload_only_the_core_is_loaded(clean_config_store):
    session = load_plugins(autoload=False)
    assert session.loaded() == [CORE]
    assert session.external() == {} and session.failed == {}
    regs = session.registries
    assert "translation" in regs.task
    assert "transformer" in regs.model
    for arch in ("transformer_tiny", "transformer_small", "transformer_iwslt_de_en",
                 "transformer_depth_adaptive_iwslt", "transformer_base"):
        assert regs.architecture.get(arch).plugin == CORE
    assert "label_smoothed_cross_entropy" in regs.criterion
    assert "adam" in regs.optimizer
    assert {"inverse_sqrt", "fixed", "cosine"} <= set(regs.lr_scheduler.names())
    assert all(entry.plugin == CORE for registry in regs.all() for entry in registry)
    # the configs are selectable: stored in hydra's ConfigStore under each kind's group
    repo = clean_config_store.repo
    assert "transformer_tiny.yaml" in repo["model"] and "adam.yaml" in repo["optim"]
    assert "label_smoothed_cross_entropy.yaml" in repo["criterion"]


def test_each_session_has_its_own_registries(clean_config_store):
    first, second = load_plugins(autoload=False), load_plugins(autoload=False)
    assert first.registries is not second.registries
    assert first.registries.model.names() == second.registries.model.names() == ["transformer"]


# --- discovery --------------------------------------------------------------------------------


def test_broken_plugin_is_reported_and_the_rest_keeps_working(brokenplug_site, on_sys_path, monkeypatch):
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    on_sys_path(brokenplug_site)
    session = load_plugins()
    assert "brokenplug" in session.failed
    assert "ImportError" in session.failed["brokenplug"]
    assert "frobnicator" in session.failed["brokenplug"]
    assert _loaded_here(session) == [CORE]
    assert "transformer_tiny" in session.registries.architecture
    with pytest.raises(PluginError) as info:
        session.require(["brokenplug"], why="x")
    message = str(info.value)
    assert message.startswith("x needs plugin(s)")
    assert "brokenplug (failed to import: ImportError: brokenplug needs the frobnicator library)" in message
    session.require([CORE], why="x")  # loaded plugins pass


def test_require_names_every_missing_plugin(clean_config_store):
    session = load_plugins(autoload=False)
    with pytest.raises(PluginError, match=r"the run needs .*alpha \(not installed\); beta \(not installed\)"):
        session.require(["alpha", CORE, "beta"], why="the run")


@pytest.mark.parametrize("value, discovers", [("1", False), ("true", False), ("0", True), ("", True), (None, True)])
def test_disable_autoload_env_switches_discovery_off(brokenplug_site, on_sys_path, monkeypatch, value, discovers):
    on_sys_path(brokenplug_site)
    if value is None:
        monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    else:
        monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, value)
    session = load_plugins()
    assert ("brokenplug" in session.failed) is discovers
    assert _loaded_here(session) == [CORE]
    assert (set(session.loaded()) == {CORE} | INSTALLED) is discovers or not INSTALLED


def test_explicit_autoload_overrides_the_env(brokenplug_site, on_sys_path, monkeypatch):
    on_sys_path(brokenplug_site)
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    assert "brokenplug" in load_plugins(autoload=True).failed
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV)
    assert load_plugins(autoload=False).failed == {}


def test_installed_plugin_is_discovered_with_its_version(testplug_site, on_sys_path, monkeypatch):
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    on_sys_path(testplug_site)
    session = load_plugins()
    assert _loaded_here(session) == [CORE, "testplug"]
    assert session.external()["testplug"] == PLUGIN_VERSION
    regs = session.registries
    assert regs.architecture.get("testplug_tiny").plugin == "testplug"
    assert regs.criterion.get("testplug_ce").plugin == "testplug"
    assert regs.model.get("transformer").plugin == CORE


def test_third_party_plugin_trains_and_is_recorded_in_the_checkpoint(testplug_site, tmp_path):
    from toolkit.checkpoint import load_checkpoint
    from toolkit.checkpoint import check_plugins, required_plugins

    save_dir = tmp_path / "run"
    result = _train(tmp_path, ["model=testplug_tiny", "criterion=testplug_ce", *_small_run(save_dir)],
                    _env(PYTHONPATH=str(testplug_site)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    checkpoint = save_dir / "checkpoint_last.pt"
    assert checkpoint.is_file()

    state = load_checkpoint(checkpoint)
    assert state["num_updates"] == 3
    assert state["cfg"]["model"]["arch"] == "testplug_tiny"
    assert state["cfg"]["model"]["encoder_layers"] == 1 and state["cfg"]["model"]["encoder_embed_dim"] == 32
    assert state["cfg"]["criterion"]["_name"] == "testplug_ce"
    assert {t.shape[-1] for k, t in state["model"].items() if "embed" in k and t.dim() == 2} == {32}
    providers = state["plugins"]["providers"]
    assert providers["architecture"] == "testplug" and providers["criterion"] == "testplug"
    assert providers["model"] == CORE  # the model class is the core's Transformer
    assert state["plugins"]["versions"]["testplug"] == PLUGIN_VERSION
    # an architecture and a criterion shape nothing that decoding rebuilds
    assert required_plugins(state, for_inference=True) == []

    # a session without the plugin refuses the checkpoint, naming the plugin
    with pytest.raises(PluginError, match=r"checkpoint .*checkpoint_last\.pt needs .*testplug \(not installed\)"):
        check_plugins(state, load_plugins(autoload=False), checkpoint)

    # ... and so does resuming it from the command line without the plugin installed
    result = _train(tmp_path, [*_small_run(save_dir), "optimization.max_update=4"], _env())
    assert result.returncode != 0
    assert "PluginError" in result.stderr and "testplug (not installed)" in result.stderr


def test_unknown_plugin_option_fails_naming_it(tmp_path):
    result = _train(tmp_path, ["model=testplug_tiny", *_small_run(tmp_path / "run")], _env())
    assert result.returncode != 0
    assert "Could not find 'model/testplug_tiny'" in result.stderr
    assert "transformer_tiny" in result.stderr  # the available options are listed
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()


# --- blocking and hooks -----------------------------------------------------------------------


class FakeCriterion:
    """Records its calls; returns ``(loss, sample_size, logging_output)`` as a Criterion does."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, sample):
        self.calls.append((model, dict(sample)))
        loss = torch.tensor(3.0)
        return loss, 5, {"loss": loss.detach(), "ntokens": 5}


class ScalingWrapper:
    def __init__(self, factor: float):
        self.factor, self.seen = factor, []

    @hookimpl(wrapper=True)
    def toolkit_train_step(self, model, criterion, sample, trainer):
        sample["soft_targets"] = "from the wrapper"  # work before the core, visible to it
        result = yield
        self.seen.append(result)
        loss, size, logging_output = result
        return loss * self.factor, size, {**logging_output, "wrapped": True}


def _train_step(session, criterion, model="the model"):
    sample = {"net_input": {}, "ntokens": 5}
    return session.hook.toolkit_train_step(model=model, criterion=criterion, sample=sample, trainer=None,
                                          validating=False)


def test_core_train_step_calls_the_criterion(clean_config_store):
    criterion = FakeCriterion()
    loss, size, logging_output = _train_step(load_plugins(autoload=False), criterion)
    assert loss.item() == 3.0 and size == 5 and logging_output["ntokens"] == 5
    assert len(criterion.calls) == 1 and criterion.calls[0][0] == "the model"


def test_wrapper_wraps_the_core_train_step(clean_config_store):
    wrapper, criterion = ScalingWrapper(0.5), FakeCriterion()
    session = load_plugins(autoload=False, extra=[("wrap", wrapper)])
    assert session.loaded() == [CORE, "wrap"]
    loss, size, logging_output = _train_step(session, criterion)
    assert len(criterion.calls) == 1  # the core ran exactly once, inside the wrapper
    assert criterion.calls[0][1]["soft_targets"] == "from the wrapper"
    assert len(wrapper.seen) == 1 and wrapper.seen[0][0].item() == 3.0  # saw the core's result
    assert loss.item() == pytest.approx(1.5) and size == 5 and logging_output["wrapped"] is True


def test_plugin_train_step_preempts_the_core(clean_config_store):
    class OwnStep:
        @hookimpl
        def toolkit_train_step(self, model, sample):  # any subset of the hook's arguments
            return torch.tensor(7.0), 1, {"own": True}

    criterion = FakeCriterion()
    loss, _, logging_output = _train_step(load_plugins(autoload=False, extra=[("own", OwnStep())]), criterion)
    assert loss.item() == 7.0 and logging_output == {"own": True}
    assert criterion.calls == []  # firstresult: the core's trylast implementation never ran


def test_block_unregisters_a_plugins_hooks(clean_config_store):
    wrapper, criterion = ScalingWrapper(10.0), FakeCriterion()
    session = load_plugins(autoload=False, extra=[("wrap", wrapper)])
    assert _train_step(session, criterion)[0].item() == 30.0
    session.block(["wrap"])
    assert session.loaded() == [CORE]
    assert session.manager.get_plugin("wrap") is None
    loss, _, logging_output = _train_step(session, criterion)
    assert loss.item() == 3.0 and "wrapped" not in logging_output
    assert len(wrapper.seen) == 1  # not called after blocking
    with pytest.raises(PluginError, match=r"needs plugin\(s\) that are not available: wrap"):
        session.require(["wrap"], why="the config")
    session.block(["not_loaded"])  # blocking an absent plugin is a no-op


def test_blocking_the_core_is_refused(clean_config_store):
    session = load_plugins(autoload=False)
    with pytest.raises(PluginError, match="core plugin cannot be blocked"):
        session.block([CORE])
    assert session.loaded() == [CORE]
    assert _train_step(session, FakeCriterion())[0].item() == 3.0


def test_training_options_for_a_plugin_that_is_not_loaded_fail_before_any_work(clean_config_store, tmp_path):
    from toolkit.config import compose_train_config
    from toolkit.training.train import train

    session = load_plugins(autoload=False, extra=[("blocked_one", object())])
    cfg = compose_train_config([f"checkpoint.save_dir={tmp_path / 'run'}", "+plugins.options.layerdorp.rate=0.2"])
    with pytest.raises(PluginError, match=r"plugins\.options.*layerdorp \(not installed\)"):
        train(cfg, session)
    assert not (tmp_path / "run").exists()
    # settings of a plugin blocked for this run are kept, not refused
    cfg = compose_train_config([f"checkpoint.save_dir={tmp_path / 'run'}", "plugins.block=[blocked_one]",
                                "+plugins.options.blocked_one.rate=0.2", "optimization.max_update=1",
                                "task.toy_pairs=300", "task.vocab_size=200", "dataset.max_positions=64",
                                "common.log_format=none", "common.tensorboard_dir=null"])
    assert train(cfg, session)["num_updates"] == 1


# --- typed options and plugin options on every inference path (an installed plugin) -----------


@pytest.fixture(scope="module")
def core_checkpoint(tmp_path_factory) -> Path:
    """A core transformer_tiny (2+2 blocks) trained for 3 updates, without any plugin."""
    save_dir = tmp_path_factory.mktemp("core")
    result = _train(save_dir, _small_run(save_dir / "run"), _env(**{DISABLE_AUTOLOAD_ENV: "1"}))
    assert result.returncode == 0, result.stderr[-3000:]
    return save_dir / "run" / "checkpoint_last.pt"


def test_cli_plugin_options_are_typed(testplug_site, tmp_path):
    env = _env(PYTHONPATH=str(testplug_site))
    result = _train(tmp_path, [*_small_run(tmp_path / "run"), "+plugins.options.testplug.keep_decoder_layer=1"], env)
    assert result.returncode != 0
    assert "unknown option(s) keep_decoder_layer for plugin testplug" in result.stderr
    assert "its options are: keep_decoder_layers" in result.stderr
    result = _train(tmp_path, [*_small_run(tmp_path / "run"), "+plugins.options.testplug.keep_decoder_layers=x"], env)
    assert result.returncode != 0 and "plugins.options.testplug.keep_decoder_layers" in result.stderr
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()


def test_plugin_options_reach_generate_the_benchmark_and_the_exporter(testplug_site, core_checkpoint, tmp_path):
    env = _env(PYTHONPATH=str(testplug_site))
    source = tmp_path / "source.txt"
    source.write_text("".join(f"the small dog sees {n} red balls\n" for n in range(12)))
    generate = [str(TOOLKIT_TRAIN.parent / "toolkit-generate"), f"path={core_checkpoint}", f"input={source}",
                "generation.beam=2"]
    full = subprocess.run([*generate, f"output={tmp_path / 'full.txt'}"], env=env, capture_output=True, text=True,
                          timeout=300)
    pruned = subprocess.run([*generate, f"output={tmp_path / 'pruned.txt'}",
                             "+plugin_options.testplug.keep_decoder_layers=1"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert full.returncode == 0 and pruned.returncode == 0, full.stderr[-2000:] + pruned.stderr[-2000:]
    params = [int(r.stdout.split("parameters")[0].split(": ")[-1].replace(",", "")) for r in (full, pruned)]
    assert params[0] > params[1] > 0  # both print the checkpoint's parameters and bytes
    assert f"{core_checkpoint.stat().st_size:,} bytes on disk" in full.stdout

    benchmark = subprocess.run(
        [sys.executable, str(Path(__file__).parents[1] / "scripts" / "benchmark_generate.py"),
         "--checkpoint", str(core_checkpoint), "--source", str(source), "--beam", "2", "--batch", "4",
         "--rounds", "1", "--plugin-option", "testplug.keep_decoder_layers=1", "--side-by-side"],
        env=env, capture_output=True, text=True, timeout=300)
    assert benchmark.returncode == 0, benchmark.stderr[-3000:]
    lines = [line for line in benchmark.stdout.splitlines() if "sentences/s" in line]
    assert len(lines) == 2 and "{'testplug': {'keep_decoder_layers': 1}}" in lines[0] and "as saved" in lines[1]
    assert f"{params[1]:,} parameters" in lines[0] and f"{params[0]:,} parameters" in lines[1]
    assert "time ratio" in benchmark.stdout

    pytest.importorskip("ctranslate2")
    export = [str(TOOLKIT_TRAIN.parent / "toolkit-export-ct2"), str(core_checkpoint)]
    for name, extra in (("full", []), ("pruned", ["--plugin-option", "testplug.keep_decoder_layers=1"])):
        result = subprocess.run([*export, str(tmp_path / name), *extra], env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "pruned" / "model.bin").stat().st_size < (tmp_path / "full" / "model.bin").stat().st_size


# --- the guide's minimal plugin, as written in plugins/README.md ---------------------------


def _guide_files() -> dict[str, str]:
    """``{file name: text}`` of the code blocks that follow a `file name` line in the guide."""
    guide = (Path(__file__).parents[1] / "plugins" / "README.md").read_text()
    pattern = r"`([\w.]+\.(?:toml|py))`\n\n```\w+\n(.*?)```"
    return dict(re.findall(pattern, guide, flags=re.S))


def test_the_guides_minimal_plugin_installs_and_works(tmp_path):
    from toolkit.checkpoint import load_checkpoint

    files = _guide_files()
    assert set(files) == {"pyproject.toml", "toolkit_freeze.py"}
    package = tmp_path / "pkg"
    package.mkdir()
    for name, text in files.items():
        (package / name).write_text(text)
    env = _env(PYTHONPATH=str(_pip_install(package, tmp_path / "site")))

    result = _train(tmp_path, [*_small_run(tmp_path / "bad"), "+plugins.options.freeze.prefix=[encoder.]"], env)
    assert result.returncode != 0 and "its options are: prefixes" in result.stderr
    weights = {}
    for updates in (1, 3):
        run = tmp_path / f"run{updates}"
        result = _train(tmp_path, [*_small_run(run), "+plugins.options.freeze={}",
                                   f"optimization.max_update={updates}"], env)
        assert result.returncode == 0, result.stderr[-3000:]
        weights[updates] = load_checkpoint(run / "checkpoint_last.pt")["model"]
    assert "prefixes:\n      - encoder.embedding." in (tmp_path / "run3" / "config.yaml").read_text()
    frozen = [k for k in weights[3] if k.startswith("encoder.embedding.")]
    trained = [k for k in weights[3] if k.startswith("encoder.layers.")]
    assert frozen and all(torch.equal(weights[1][k], weights[3][k]) for k in frozen)  # same seed, never updated
    assert not any(torch.equal(weights[1][k], weights[3][k]) for k in trained if weights[3][k].dim() == 2)
