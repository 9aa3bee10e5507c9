"""The plugin manager: built-ins, entry-point discovery, an off switch, plugin provenance.

Built-in components register through the same ``toolkit_register`` hook a third-party plugin
implements (``toolkit.builtin``); external plugins are modules named by the ``toolkit.plugins``
entry-point group. ``TOOLKIT_DISABLE_PLUGIN_AUTOLOAD=1`` skips that discovery. A plugin that
fails to import is reported by name with its error and the rest keep working; a run that
needs it (``plugins.require`` or a checkpoint built with it) then fails naming it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from toolkit import hooks
from toolkit.errors import UserError
from toolkit.registry import Registries

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "toolkit.plugins"
DISABLE_AUTOLOAD_ENV = "TOOLKIT_DISABLE_PLUGIN_AUTOLOAD"
CORE = "core"


class PluginError(UserError, RuntimeError):
    """A plugin is missing, failed to import, or is forbidden by the config."""


@dataclass
class PluginSession:
    """The plugin manager together with the registries its plugins filled."""

    manager: pluggy.PluginManager
    registries: Registries
    versions: dict[str, str] = field(default_factory=dict)  # plugin -> distribution version
    failed: dict[str, str] = field(default_factory=dict)  # plugin -> import error
    blocked: set[str] = field(default_factory=set)  # plugins switched off by a config

    @property
    def hook(self) -> Any:
        return self.manager.hook

    def loaded(self) -> list[str]:
        return sorted(name for name, _ in self.manager.list_name_plugin() if name)

    def external(self) -> dict[str, str]:
        """``{plugin: version}`` of every loaded plugin that is not the core."""
        return {name: self.versions.get(name, "") for name in self.loaded() if name != CORE}

    def require(self, names: Iterable[str], why: str) -> None:
        """Fail, naming each plugin of ``names`` that is not loaded (and its import error)."""
        missing = [name for name in names if name not in self.loaded()]
        if missing:
            details = "; ".join(f"{n} ({self._why_missing(n)})" for n in missing)
            raise PluginError(f"{why} needs plugin(s) that are not available: {details}")

    def require_options_owners(self, options: Any, where: str) -> None:
        """Fail unless every key of ``options`` (``plugins.options``) names a loaded plugin.

        Settings for a blocked plugin are allowed: blocking it for one run keeps a recipe valid.
        """
        self.require([name for name in options if name not in self.blocked], why=f"{where} (plugins.options)")

    def _why_missing(self, name: str) -> str:
        if name in self.blocked:
            return "blocked by plugins.block"
        if name in self.failed:
            return f"failed to import: {self.failed[name]}"
        return "not installed"

    def block(self, names: Iterable[str], cfg: Any = None) -> None:
        """Unregister plugins so none of their hooks run (``plugins.block`` in a config).

        Fails if ``cfg`` names a component that one of them registered.
        """
        for name in names:
            if name == CORE:
                raise PluginError("the core plugin cannot be blocked")
            if self.manager.get_plugin(name) is not None:
                self.manager.unregister(name=name)
                self.blocked.add(name)
                logger.info("plugin %s blocked by the config", name)
        if cfg is not None:
            used = {kind: p for kind, p in self.registries.providers(cfg).items() if p in self.blocked}
            if used:
                raise PluginError(f"the config uses components of blocked plugins: {used}")


def load_plugins(autoload: bool | None = None, extra: Iterable[tuple[str, object]] = ()) -> PluginSession:
    """Start a plugin manager: the core, entry-point plugins (unless switched off), ``extra``.

    :param autoload: discover entry points; ``None`` reads ``TOOLKIT_DISABLE_PLUGIN_AUTOLOAD``.
    :param extra: ``(name, module_or_object)`` plugins to register directly (tests, notebooks).
    """
    from toolkit import builtin

    manager = pluggy.PluginManager(hooks.PROJECT)
    manager.add_hookspecs(hooks)
    session = PluginSession(manager, Registries())
    manager.register(builtin, name=CORE)
    if autoload is None:
        autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")
    if autoload:
        _discover(session)
    for name, plugin in extra:
        manager.register(plugin, name=name)
    _register_components(session)
    return session


def _discover(session: PluginSession) -> None:
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        name = entry_point.name
        if session.manager.get_plugin(name) is not None or name in session.failed:
            continue  # the same distribution seen twice on sys.path
        try:
            plugin = entry_point.load()
        except Exception as error:  # a broken plugin must not take the toolkit down
            session.failed[name] = f"{type(error).__name__}: {error}"
            logger.error("plugin %r (entry point %s) failed to import: %s", name, entry_point.value,
                         session.failed[name])
            continue
        session.manager.register(plugin, name=name)
        session.versions[name] = entry_point.dist.version if entry_point.dist else ""


def _register_components(session: PluginSession) -> None:
    """Call each plugin's ``toolkit_register`` on its own, recording who registered what.

    The core registers first, then the other plugins in the order they were registered, so a
    plugin can build on core components (e.g. an architecture of the core ``transformer``).
    """
    impls = session.manager.hook.toolkit_register.get_hookimpls()  # registration order
    for impl in sorted(impls, key=lambda impl: impl.plugin_name != CORE):  # stable: core first
        for registry in session.registries.all():
            registry.current_plugin = impl.plugin_name
        try:
            impl.function(registries=session.registries)
        except Exception as error:
            raise PluginError(f"plugin {impl.plugin_name!r} failed to register: {error}") from error
        finally:
            for registry in session.registries.all():
                registry.current_plugin = None


_default: PluginSession | None = None


def get_plugins() -> PluginSession:
    """The process-wide plugin session, started on first use."""
    global _default
    if _default is None:
        _default = load_plugins()
    return _default


def reset_plugins() -> None:
    """Forget the process-wide session (tests; after installing a plugin)."""
    global _default
    _default = None
