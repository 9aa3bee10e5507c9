"""Fixtures shared by the core's tests and every plugin's (the repository root, so ``tests`` and
``plugins`` both see them): keep process-wide state (hydra's ConfigStore, the plugin session)
clean, and the one toy model that tests in every folder share instead of training their own."""

from __future__ import annotations

import pytest

from toolkit.testing import clean_config_store  # noqa: F401  (a fixture)

# the embedded demo's config (transformer_tiny, 20k toy pairs), 3 epochs instead of 5
TOY_TRAIN = ["optimization.max_epoch=3", "common.log_format=none"]


@pytest.fixture(scope="session")
def toy_training(tmp_path_factory):
    """The demo model trained on the toy corpus (about 70 s), trained once for the whole suite:
    ``(save_dir, train()'s result)``; its tensorboard events are in ``save_dir/tb``."""
    from toolkit.config import compose_train_config
    from toolkit.training.train import train

    save_dir = tmp_path_factory.mktemp("toy-run")
    result = train(compose_train_config([*TOY_TRAIN, f"checkpoint.save_dir={save_dir}",
                                         f"common.tensorboard_dir={save_dir / 'tb'}"]))
    return save_dir, result


@pytest.fixture(scope="session")
def trained_run(toy_training):
    """The folder of the shared toy run: checkpoint1..3, checkpoint_best/last, data-bin."""
    return toy_training[0]
