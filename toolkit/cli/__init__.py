"""Console scripts: thin hydra wrappers over pure functions (``train(cfg)``, ``generate(cfg)``)."""

from __future__ import annotations

from typing import Any, Callable

import hydra
from omegaconf import DictConfig

from toolkit.config import CONF_DIR, register_schemas
from toolkit.plugins import get_plugins


def hydra_entry(config_name: str, job: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """A console-script ``main`` composing ``toolkit/conf/<config_name>.yaml`` for ``job``.

    Plugins load first: every registered component's config must be in the ConfigStore before
    hydra composes (``model=ARCH_FROM_A_PLUGIN``).
    """

    def main() -> None:
        get_plugins()
        register_schemas()
        hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base=None)(job)()

    return main
