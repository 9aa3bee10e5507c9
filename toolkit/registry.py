"""One generic registry for every kind of component (task, model, criterion, ...).

A component is a class registered under a name together with its config dataclass::

    @registries.criterion.register("label_smoothed_cross_entropy", LabelSmoothedCEConfig)
    class LabelSmoothedCrossEntropy(Criterion): ...

Registering rejects duplicate names and classes of the wrong base, and stores the config
dataclass in hydra's ConfigStore under the kind's group, so that ``criterion=NAME`` on the
command line selects it and its fields are type-checked.  Building looks the name up in the
config's ``_name`` field.  Architectures are config presets of a registered model: they are
stored in the ``model`` config group under their own name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from toolkit.errors import UserError

T = TypeVar("T")


class RegistryError(UserError, KeyError):
    """An unknown, duplicate or ill-typed component name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    """One registered component: its class, config schema and the plugin that added it."""

    name: str
    cls: Any
    config: type | None
    plugin: str | None


class Registry(Generic[T]):
    """Named components of one kind, all subclasses of ``base``.

    :param kind: the kind's name, also the hydra config group (e.g. ``"criterion"``).
    :param base: the class every registered component must derive from.
    :param config_group: the ConfigStore group for configs (defaults to ``kind``).
    """

    def __init__(self, kind: str, base: type | None, config_group: str | None = None):
        self.kind = kind
        self.base = base
        self.config_group = config_group or kind
        self.current_plugin: str | None = None  # set by the plugin manager while registering
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, config: type | None = None) -> Callable[[type[T]], type[T]]:
        """Decorator registering a class under ``name`` with its config dataclass."""

        def decorator(cls: type[T]) -> type[T]:
            self.add(name, cls, config)
            return cls

        return decorator

    def add(self, name: str, cls: Any, config: type | None = None) -> None:
        """Register ``cls`` (a class, or any object for base-less kinds) under ``name``."""
        if name in self._entries:
            raise RegistryError(
                f"cannot register {self.kind} {name!r}: the name is already taken by "
                f"{_qualname(self._entries[name].cls)}"
            )
        if self.base is not None and not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise RegistryError(
                f"cannot register {self.kind} {name!r}: {_qualname(cls)} is not a subclass "
                f"of {_qualname(self.base)}"
            )
        if config is not None:
            if not dataclasses.is_dataclass(config):
                raise RegistryError(f"config of {self.kind} {name!r} must be a dataclass")
            if "_name" not in {f.name for f in dataclasses.fields(config)}:
                raise RegistryError(
                    f"config {config.__name__} of {self.kind} {name!r} needs a `_name: str` field"
                )
            store_config(self.config_group, name, config(_name=name))
        self._entries[name] = Entry(name, cls, config, self.current_plugin)

    def get(self, name: str) -> Entry:
        """The entry registered as ``name``; the error lists every registered name."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise RegistryError(
                f"unknown {self.kind} {name!r}; registered {self.kind} names: {known}"
            ) from None

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> T:
        """Build the component named by ``cfg._name`` from its typed config.

        Uses the class's ``from_config(cfg, *args, **kwargs)`` factory when it has one (a
        factory assembles submodules for constructors that take them), else the constructor.
        """
        entry = self.get(component_name(cfg))
        typed = to_dataclass(cfg, entry.config)
        factory = getattr(entry.cls, "from_config", entry.cls)
        return factory(typed, *args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


class PluginOptionsRegistry:
    """Each plugin's options dataclass, and the role the plugin plays for a checkpoint.

    ``registries.plugin_options.add("my_pruner", MyPrunerOptions, role="training")`` in the
    plugin's ``toolkit_register`` makes ``+plugins.options.my_pruner.<key>=...`` (training) and
    ``+plugin_options.my_pruner.<key>=...`` (generation) typed: an unknown key lists the known
    ones, a wrong type fails, and the defaults are written into the run's config. ``role`` says
    whether a checkpoint trained with these options needs the plugin to rebuild its model
    (``"model"``: it adds or replaces modules) or only to train it (``"training"``).
    """

    kind = "plugin_options"
    ROLES = ("model", "training")

    def __init__(self) -> None:
        self.current_plugin: str | None = None  # set by the plugin manager while registering
        self._schemas: dict[str, type] = {}
        self._roles: dict[str, str] = {}

    def add(self, plugin: str, schema: type, role: str = "model") -> None:
        """Register ``plugin``'s options dataclass (a plugin registers only its own)."""
        if self.current_plugin not in (None, plugin):
            raise RegistryError(f"plugin {self.current_plugin!r} cannot register options for plugin {plugin!r}")
        if plugin in self._schemas:
            raise RegistryError(f"options of plugin {plugin!r} are already registered")
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            raise RegistryError(f"options of plugin {plugin!r} must be a dataclass, got {_qualname(schema)}")
        if role not in self.ROLES:
            raise RegistryError(f"role of plugin {plugin!r} must be one of {self.ROLES}, got {role!r}")
        self._schemas[plugin], self._roles[plugin] = schema, role

    def schema(self, plugin: str) -> type | None:
        """The options dataclass of ``plugin``, or ``None`` if it registered none (free-form)."""
        return self._schemas.get(plugin)

    def role(self, plugin: str) -> str:
        """``"model"`` or ``"training"``; plugins that registered no options count as ``"model"``."""
        return self._roles.get(plugin, "model")

    def names(self) -> list[str]:
        return sorted(self._schemas)

    def __iter__(self) -> Iterator[Entry]:
        return iter([Entry(name, schema, None, name) for name, schema in self._schemas.items()])


@dataclass
class Registries:
    """Every registry of a toolkit session; plugins receive this in ``toolkit_register``."""

    task: Registry = field(default_factory=lambda: Registry("task", _base("tasks.base", "Task")))
    model: Registry = field(
        default_factory=lambda: Registry("model", _base("models.base", "EncoderDecoderModel"))
    )
    architecture: Registry = field(
        default_factory=lambda: Registry("architecture", None, config_group="model")
    )
    criterion: Registry = field(
        default_factory=lambda: Registry("criterion", _base("criterions.base", "Criterion"))
    )
    optimizer: Registry = field(
        default_factory=lambda: Registry("optimizer", _base("optim.base", "Optimizer"), "optim")
    )
    lr_scheduler: Registry = field(
        default_factory=lambda: Registry("lr_scheduler", _base("optim.lr_scheduler", "LRScheduler"))
    )
    search: Registry = field(
        default_factory=lambda: Registry("search", _base("generation.search", "Search"), "generation/search")
    )
    exit_policy: Registry = field(
        default_factory=lambda: Registry(
            "exit_policy", _base("generation.exit_policy", "ExitPolicy"), "generation/exit_policy")
    )
    plugin_options: PluginOptionsRegistry = field(default_factory=PluginOptionsRegistry)

    def all(self) -> list[Registry | PluginOptionsRegistry]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def register_architecture(
        self, model_name: str, arch_name: str
    ) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
        """Decorator for a named architecture: a function returning the model's preset config.

        The preset is stored in the ``model`` config group, so ``model=ARCH`` selects it.
        """

        def decorator(preset: Callable[[], Any]) -> Callable[[], Any]:
            model = self.model.get(model_name)
            cfg = preset()
            if model.config is None or not isinstance(cfg, model.config):
                raise RegistryError(
                    f"architecture {arch_name!r} must return a {model.config} for model {model_name!r}"
                )
            if arch_name in self.model:
                raise RegistryError(f"architecture {arch_name!r} clashes with a model of that name")
            self.architecture.add(arch_name, preset)
            store_config("model", arch_name, dataclasses.replace(cfg, _name=model_name, arch=arch_name))
            return preset

        return decorator

    def providers(self, cfg: Any) -> dict[str, str]:
        """``{"model": plugin, ...}``: which plugin provided each component named in ``cfg``."""
        found = {}
        for registry in self.all():
            if not isinstance(registry, Registry):
                continue
            section = cfg.get(registry.config_group) if hasattr(cfg, "get") else None
            if registry.kind == "architecture":
                name = section.get("arch") if section is not None else None
            else:
                name = section.get("_name") if section is not None else None
            if name and name in registry and registry.get(name).plugin:
                found[registry.kind] = registry.get(name).plugin
        return found


def component_name(cfg: Any) -> str:
    name = cfg.get("_name") if isinstance(cfg, (dict, DictConfig)) else getattr(cfg, "_name", None)
    if not name:
        raise RegistryError(f"config has no `_name` to say which component to build: {cfg}")
    return name


def to_dataclass(cfg: Any, schema: type | None) -> Any:
    """Turn a DictConfig (or dict) into an instance of the registered dataclass."""
    if schema is None or isinstance(cfg, schema):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    known = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise RegistryError(f"unknown keys {unknown} for {schema.__name__}")
    return schema(**cfg)


def store_config(group: str, name: str, node: Any) -> None:
    """Store a config node in hydra's ConfigStore (``group=name`` on the command line)."""
    ConfigStore.instance().store(group=group, name=name, node=node)


def _qualname(obj: Any) -> str:
    return getattr(obj, "__qualname__", repr(obj))


def _base(module: str, name: str) -> type:
    import importlib

    return getattr(importlib.import_module(f"toolkit.{module}"), name)
