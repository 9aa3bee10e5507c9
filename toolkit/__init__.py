"""toolkit: a plugin-based, registry-driven sequence-to-sequence toolkit.

A plugin needs only ``from toolkit import hookimpl`` and an entry point in the
``toolkit.plugins`` group; see ``toolkit.hooks`` for every hook.
"""

from toolkit.hooks import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
