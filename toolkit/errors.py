"""The one mark of a user's mistake, shared by every error class that reports one.

An error deriving from ``UserError`` (a bad config value, missing or malformed input, an
unusable checkpoint, a missing plugin, training that diverged) says all a user needs in its
message: the console commands print that one line and exit 1 (``toolkit.cli.reporting_errors``).
Any other exception is a bug, and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix from its message alone (no traceback is printed for it)."""


class ConfigError(UserError, ValueError):
    """An invalid value in a run config (``toolkit.config`` re-exports it)."""


class NonFiniteError(UserError, FloatingPointError):
    """Training produced a non-finite loss, gradient or weight (it diverged)."""
