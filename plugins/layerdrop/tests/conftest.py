"""Fixtures of the layerdrop tests: a LayerDrop model trained on the toy corpus."""

from __future__ import annotations

import pytest

from toolkit.testing import clean_config_store  # noqa: F401  (a fixture)

from layerdrop_testing import RATES, session, small_config


@pytest.fixture(scope="session")
def layerdrop_run(tmp_path_factory):
    """A 4+4 toy model trained 30 updates with LayerDrop 0.5 on both sides: its run folder."""
    from toolkit.plugins import reset_plugins
    from toolkit.training.train import train

    save_dir = tmp_path_factory.mktemp("layerdrop-run")
    train(small_config(*RATES, "optimization.max_update=30", f"checkpoint.save_dir={save_dir}"), session())
    reset_plugins()
    return save_dir
