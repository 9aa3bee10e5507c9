"""``toolkit-preprocess``: train the tokenizer(s) and binarize a parallel text folder.

Takes the same overrides as toolkit-train, e.g.
``toolkit-preprocess task.data=DATA task.source_lang=de task.target_lang=en task.destdir=OUT``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from toolkit.config import CONF_DIR, register_schemas
from toolkit.plugins import get_plugins


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base=None)
def _main(cfg: DictConfig) -> None:
    get_plugins().registries.task.build(cfg.task, cfg).prepare()


def main() -> None:
    get_plugins()
    register_schemas()
    _main()


if __name__ == "__main__":
    main()
