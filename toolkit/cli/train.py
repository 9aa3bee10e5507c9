"""``toolkit-train``: hydra composes the config, ``toolkit.training.train`` runs it."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from toolkit.cli import hydra_entry


def _train(cfg: DictConfig) -> None:
    from toolkit.training.train import train

    if train(cfg)["interrupted"]:
        sys.exit(130)


main = hydra_entry("train", _train)

if __name__ == "__main__":
    main()
