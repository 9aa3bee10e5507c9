"""``toolkit-train``: hydra composes the config, ``toolkit.training.train`` runs it."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from toolkit.config import CONF_DIR, register_schemas
from toolkit.plugins import get_plugins


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base=None)
def _main(cfg: DictConfig) -> None:
    from toolkit.training.train import train

    result = train(cfg)
    if result["interrupted"]:
        sys.exit(130)


def main() -> None:
    get_plugins()  # every plugin's components must be in the ConfigStore before composing
    register_schemas()
    _main()


if __name__ == "__main__":
    main()
