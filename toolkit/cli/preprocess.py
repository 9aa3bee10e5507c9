"""``toolkit-preprocess``: train the tokenizer(s) and binarize a parallel text folder.

Takes the same overrides as toolkit-train, e.g.
``toolkit-preprocess task.data=DATA task.source_lang=de task.target_lang=en task.destdir=OUT``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from toolkit.cli import hydra_entry
from toolkit.plugins import get_plugins


def _preprocess(cfg: DictConfig) -> None:
    get_plugins().registries.task.build(cfg.task, cfg).prepare()


main = hydra_entry("train", _preprocess)

if __name__ == "__main__":
    main()
