"""Behaviour of the component registries (toolkit.registry)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import pytest
from omegaconf import OmegaConf

from toolkit import hookimpl
from toolkit.models.transformer import TransformerConfig
from toolkit.plugins import PluginError, load_plugins
from toolkit.registry import Registries, Registry, RegistryError, component_name, to_dataclass

pytestmark = pytest.mark.usefixtures("clean_config_store")

GROUP = "regtest_widget"  # a config group no packaged config uses


class Widget:
    pass


class Gadget(Widget):
    def __init__(self, cfg, *args, **kwargs):
        self.cfg, self.args, self.kwargs = cfg, args, kwargs


class Factoried(Widget):
    def __init__(self, cfg, built_by):
        self.cfg, self.built_by = cfg, built_by

    @classmethod
    def from_config(cls, cfg, size, *, flag=False):
        return cls(cfg, built_by=("from_config", size, flag))


@dataclass
class GadgetConfig:
    _name: str = "gadget"
    depth: int = 2
    rate: float = 0.5
    label: Optional[str] = None


@dataclass
class NamelessConfig:
    depth: int = 2


@pytest.fixture
def registry() -> Registry:
    return Registry("widget", Widget, config_group=GROUP)


# --- registering -----------------------------------------------------------------------------


def test_register_decorator_returns_class_and_records_entry(registry):
    decorated = registry.register("gadget", GadgetConfig)(Gadget)
    assert decorated is Gadget
    entry = registry.get("gadget")
    assert (entry.name, entry.cls, entry.config, entry.plugin) == ("gadget", Gadget, GadgetConfig, None)
    assert "gadget" in registry and "other" not in registry
    assert registry.names() == ["gadget"] and len(registry) == 1
    assert [e.name for e in registry] == ["gadget"]


def test_duplicate_name_is_rejected_naming_the_holder(registry):
    registry.add("gadget", Gadget, GadgetConfig)

    class Other(Widget):
        pass

    with pytest.raises(RegistryError) as info:
        registry.add("gadget", Other)
    message = str(info.value)
    assert "'gadget'" in message and "already taken" in message and "Gadget" in message
    assert registry.get("gadget").cls is Gadget  # the first registration stands


def test_wrong_base_class_is_rejected(registry):
    class NotAWidget:
        pass

    with pytest.raises(RegistryError, match=r"NotAWidget is not a subclass of Widget"):
        registry.add("bad", NotAWidget)
    with pytest.raises(RegistryError, match="not a subclass"):
        registry.add("instance", Gadget.__new__(Gadget))  # an instance, not a class
    assert "bad" not in registry and "instance" not in registry


def test_baseless_registry_accepts_any_object():
    anything = Registry("thing", None, config_group=GROUP)
    anything.add("fn", len)
    assert anything.get("fn").cls is len


def test_registry_error_is_a_key_error_with_an_unquoted_message():
    error = RegistryError("unknown widget 'x'")
    assert isinstance(error, KeyError)
    assert str(error) == "unknown widget 'x'"


def test_config_is_stored_in_hydra_config_store(registry, clean_config_store):
    registry.add("gadget", Gadget, GadgetConfig)
    node = clean_config_store.repo[GROUP]["gadget.yaml"].node
    assert node._name == "gadget" and node.depth == 2
    assert OmegaConf.get_type(node) is GadgetConfig  # typed: hydra checks fields against it


def test_config_group_defaults_to_kind(clean_config_store):
    Registry("regtest_kind", Widget).add("gadget", Gadget, GadgetConfig)
    assert "gadget.yaml" in clean_config_store.repo["regtest_kind"]


def test_config_without_name_field_is_rejected(registry, clean_config_store):
    with pytest.raises(RegistryError, match=r"NamelessConfig .* needs a `_name: str` field"):
        registry.add("nameless", Gadget, NamelessConfig)
    assert "nameless" not in registry
    assert "nameless.yaml" not in clean_config_store.repo.get(GROUP, {})


def test_config_that_is_not_a_dataclass_is_rejected(registry):
    class PlainConfig:
        _name = "plain"

    with pytest.raises(RegistryError, match="must be a dataclass"):
        registry.add("plain", Gadget, PlainConfig)
    assert "plain" not in registry


def test_unknown_name_error_lists_registered_names(registry):
    registry.add("gadget", Gadget, GadgetConfig)
    registry.add("another", Gadget)
    with pytest.raises(RegistryError) as info:
        registry.get("nope")
    message = str(info.value)
    assert "unknown widget 'nope'" in message
    assert "another, gadget" in message  # every registered name, sorted


def test_unknown_name_error_in_empty_registry(registry):
    with pytest.raises(RegistryError, match=r"\(none\)"):
        registry.get("nope")


# --- building ---------------------------------------------------------------------------------


def test_build_passes_a_typed_dataclass_from_a_dictconfig(registry):
    registry.add("gadget", Gadget, GadgetConfig)
    cfg = OmegaConf.create({"_name": "gadget", "depth": 5, "rate": 0.25, "label": "x"})
    built = registry.build(cfg, "positional", key="word")
    assert isinstance(built, Gadget)
    assert built.cfg == GadgetConfig(_name="gadget", depth=5, rate=0.25, label="x")
    assert built.args == ("positional",) and built.kwargs == {"key": "word"}


def test_build_fills_defaults_for_missing_keys(registry):
    registry.add("gadget", Gadget, GadgetConfig)
    built = registry.build({"_name": "gadget"})
    assert built.cfg == GadgetConfig()


def test_build_resolves_interpolations_against_the_whole_config(registry):
    registry.add("gadget", Gadget, GadgetConfig)
    root = OmegaConf.create({"run": {"dir": "/runs/a"}, "gadget": {"_name": "gadget", "label": "${run.dir}/x"}})
    assert registry.build(root.gadget).cfg.label == "/runs/a/x"


def test_build_accepts_an_instance_of_the_config_dataclass(registry):
    registry.add("gadget", Gadget, GadgetConfig)
    cfg = GadgetConfig(depth=7)
    assert registry.build(cfg).cfg is cfg


def test_build_uses_from_config_when_present(registry):
    registry.add("factoried", Factoried, dataclasses.make_dataclass(
        "FactoriedConfig", [("_name", str, "factoried"), ("size", int, 1)]))
    built = registry.build(OmegaConf.create({"_name": "factoried", "size": 3}), 10, flag=True)
    assert isinstance(built, Factoried)
    assert built.built_by == ("from_config", 10, True)
    assert built.cfg.size == 3 and dataclasses.is_dataclass(built.cfg)


def test_build_rejects_unknown_keys(registry):
    registry.add("gadget", Gadget, GadgetConfig)
    with pytest.raises(RegistryError, match=r"unknown keys \['colour', 'extra'\] for GadgetConfig"):
        registry.build(OmegaConf.create({"_name": "gadget", "colour": "red", "extra": 1}))


def test_build_of_an_unknown_name_lists_registered_names(registry):
    registry.add("gadget", Gadget, GadgetConfig)
    with pytest.raises(RegistryError, match="registered widget names: gadget"):
        registry.build({"_name": "gizmo"})


def test_build_without_name_is_rejected(registry):
    registry.add("gadget", Gadget, GadgetConfig)
    with pytest.raises(RegistryError, match="no `_name`"):
        registry.build(OmegaConf.create({"depth": 1}))
    with pytest.raises(RegistryError, match="no `_name`"):
        component_name(GadgetConfig(_name=""))


def test_to_dataclass_without_schema_returns_the_config_unchanged():
    cfg = OmegaConf.create({"_name": "x", "anything": 1})
    assert to_dataclass(cfg, None) is cfg


# --- architectures ----------------------------------------------------------------------------


@pytest.fixture
def registries() -> Registries:
    regs = Registries()
    from toolkit.models.transformer import TransformerModel

    regs.model.add("regtest_transformer", TransformerModel, dataclasses.make_dataclass(
        "RegtestTransformerConfig", [("_name", str, "regtest_transformer"), ("arch", Optional[str], None),
                                     ("layers", int, 6)]))
    return regs


def test_register_architecture_stores_preset_in_model_group(registries, clean_config_store):
    config = registries.model.get("regtest_transformer").config

    @registries.register_architecture("regtest_transformer", "regtest_arch")
    def regtest_arch():
        return config(layers=2)

    assert registries.architecture.get("regtest_arch").cls is regtest_arch
    node = clean_config_store.repo["model"]["regtest_arch.yaml"].node
    assert (node._name, node.arch, node.layers) == ("regtest_transformer", "regtest_arch", 2)
    assert OmegaConf.get_type(node) is config


def test_register_architecture_rejects_preset_of_wrong_type(registries, clean_config_store):
    with pytest.raises(RegistryError, match=r"'regtest_bad' must return a .*RegtestTransformerConfig"):
        registries.register_architecture("regtest_transformer", "regtest_bad")(lambda: TransformerConfig())
    assert "regtest_bad" not in registries.architecture
    assert "regtest_bad.yaml" not in clean_config_store.repo.get("model", {})


def test_register_architecture_of_unknown_model_is_rejected(registries):
    with pytest.raises(RegistryError, match="unknown model 'nomodel'"):
        registries.register_architecture("nomodel", "regtest_arch2")(lambda: None)


def test_register_architecture_named_like_a_model_is_rejected(registries):
    config = registries.model.get("regtest_transformer").config
    with pytest.raises(RegistryError, match="clashes with a model"):
        registries.register_architecture("regtest_transformer", "regtest_transformer")(lambda: config())


def test_register_architecture_twice_is_rejected(registries):
    config = registries.model.get("regtest_transformer").config
    registries.register_architecture("regtest_transformer", "regtest_twice")(lambda: config())
    with pytest.raises(RegistryError, match="already taken"):
        registries.register_architecture("regtest_transformer", "regtest_twice")(lambda: config())


# --- provenance -------------------------------------------------------------------------------


@dataclass
class ProvCEConfig:
    _name: str = "regtest_prov_ce"


class ProvPlugin:
    @hookimpl
    def toolkit_register(self, registries):
        from toolkit.criterions.base import Criterion

        class ProvCE(Criterion):
            pass

        registries.criterion.add("regtest_prov_ce", ProvCE, ProvCEConfig)
        registries.register_architecture("transformer", "regtest_prov_arch")(
            lambda: dataclasses.replace(TransformerConfig(), encoder_layers=1))


def test_providers_reports_the_plugin_that_registered_each_component():
    session = load_plugins(autoload=False, extra=[("provplug", ProvPlugin())])
    regs = session.registries
    assert regs.criterion.get("regtest_prov_ce").plugin == "provplug"
    assert regs.criterion.get("label_smoothed_cross_entropy").plugin == "core"
    cfg = OmegaConf.create({
        "task": {"_name": "translation"},
        "model": {"_name": "transformer", "arch": "regtest_prov_arch"},
        "criterion": {"_name": "regtest_prov_ce"},
        "optim": {"_name": "adam"},
        "lr_scheduler": {"_name": "inverse_sqrt"},
    })
    assert regs.providers(cfg) == {
        "task": "core", "model": "core", "architecture": "provplug", "criterion": "provplug",
        "optimizer": "core", "lr_scheduler": "core",
    }
    # a core architecture is the core's; components outside any plugin or unknown are left out
    cfg.model.arch = "transformer_tiny"
    cfg.criterion._name = "not_registered"
    assert regs.providers(cfg) == {"task": "core", "model": "core", "architecture": "core",
                                   "optimizer": "core", "lr_scheduler": "core"}


def test_providers_leaves_out_components_registered_outside_a_plugin():
    regs = Registries()
    regs.criterion.add("regtest_loose", type("Loose", (regs.criterion.base,), {}))
    assert regs.criterion.get("regtest_loose").plugin is None
    assert regs.providers(OmegaConf.create({"criterion": {"_name": "regtest_loose"}})) == {}


def test_duplicate_between_plugins_fails_naming_the_offending_plugin():
    class Clash:
        @hookimpl
        def toolkit_register(self, registries):
            from toolkit.criterions.label_smoothed_cross_entropy import LabelSmoothedCEConfig
            from toolkit.criterions.base import Criterion

            registries.criterion.add("label_smoothed_cross_entropy", type("X", (Criterion,), {}),
                                     LabelSmoothedCEConfig)

    with pytest.raises(PluginError, match=r"plugin 'clashplug' failed to register: .*already taken"):
        load_plugins(autoload=False, extra=[("clashplug", Clash())])
