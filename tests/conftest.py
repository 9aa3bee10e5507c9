"""Shared fixtures: keep process-wide state (hydra's ConfigStore, the plugin session) clean."""

from __future__ import annotations

from toolkit.testing import clean_config_store  # noqa: F401  (a fixture)
