"""Pytest fixtures for the toolkit's tests and for plugins' own tests.

A plugin's ``tests/conftest.py`` takes them with ``from toolkit.testing import clean_config_store``.
"""

from __future__ import annotations

import socket

import pytest
from hydra.core.config_store import ConfigStore

from toolkit.plugins import reset_plugins


@pytest.fixture
def clean_config_store():
    """Undo whatever a test stores in hydra's ConfigStore, and forget the cached plugin session.

    Registering components (directly or through a plugin) stores their configs process-wide;
    without this, test-only names would leak into later compositions (``model=...`` options).
    """
    store = ConfigStore.instance()
    saved = _copy_tree(store.repo)
    yield store
    _drop_added(store.repo, saved)
    reset_plugins()


def _copy_tree(tree: dict) -> dict:
    return {key: _copy_tree(value) if isinstance(value, dict) else value for key, value in tree.items()}


def _drop_added(tree: dict, saved: dict) -> None:
    """Remove what was stored since ``saved``, except hydra's own nodes (stored once a process)."""
    for key in list(tree):
        if key == "hydra":
            continue
        if key not in saved:
            del tree[key]
        elif isinstance(tree[key], dict) and isinstance(saved[key], dict):
            _drop_added(tree[key], saved[key])


def free_port() -> int:
    """A TCP port free on this machine now (a distributed test's ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
