"""Fixtures of the depth_adaptive tests: a plugin session (helpers: ``da_testing``)."""

from __future__ import annotations

import pytest
import torch

from toolkit.plugins import load_plugins
from toolkit.testing import clean_config_store  # noqa: F401  (a fixture)

import depth_adaptive.plugin

@pytest.fixture
def session(clean_config_store):
    """The core and this plugin only; torch's thread count is restored afterwards (runs set it)."""
    threads = torch.get_num_threads()
    yield load_plugins(autoload=False, extra=[("depth_adaptive", depth_adaptive.plugin)])
    torch.set_num_threads(threads)
