"""Console scripts: thin hydra wrappers over pure functions (``train(cfg)``, ``generate(cfg)``).

A failing command prints a user's mistake (``toolkit.errors.UserError``: a bad config value,
missing or malformed input, an unusable checkpoint; or a missing input file) as one line and
exits 1; any other exception is a bug and keeps its traceback (``reporting_errors``).
"""

from __future__ import annotations

import functools
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import hydra
from omegaconf import DictConfig

from toolkit.config import CONF_DIR, register_schemas
from toolkit.errors import UserError
from toolkit.plugins import get_plugins

USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError)
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"  # =1: a traceback for user errors too (hydra's own switch)


@contextmanager
def reporting_errors(program: str, also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn a user error (``USER_ERRORS`` and ``also``) raised in the block into one message,
    ``PROGRAM: KIND: message`` on standard error, and exit status 1. Other exceptions pass."""
    try:
        yield
    except USER_ERRORS + also as error:
        if os.environ.get(FULL_ERROR_ENV) == "1":
            raise
        print(f"{program}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def hydra_entry(config_name: str, job: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """A console-script ``main`` composing ``toolkit/conf/<config_name>.yaml`` for ``job``.

    Plugins load first: every registered component's config must be in the ConfigStore before
    hydra composes (``model=ARCH_FROM_A_PLUGIN``). User errors are reported as one line.
    """

    @functools.wraps(job)  # hydra names the job (and its log file) after the job's module
    def reported_job(cfg: DictConfig) -> Any:
        with reporting_errors(_program()):
            return job(cfg)

    main_spec = getattr(sys.modules["__main__"], "__spec__", None)
    if reported_job.__module__ == "__main__" and main_spec is not None:  # python -m toolkit.cli.train (torchrun)
        reported_job.__module__ = main_spec.name  # else hydra would name the job after this file

    def main() -> None:
        with reporting_errors(_program()):
            get_plugins()
            register_schemas()
        hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base=None)(reported_job)()

    return main


def _program() -> str:
    return Path(sys.argv[0]).name or "toolkit"
