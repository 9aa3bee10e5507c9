"""What ``toolkit-train`` leaves in its run folder besides checkpoints: its log and hydra's
record of the command, written only once the run has started there.

Hydra would create its run directory (``.hydra/`` and the log file) before the job runs, so a
command that failed on a bad config value or bad data used to leave a save folder behind.
``toolkit/conf/train.yaml`` therefore points hydra at the working directory and writes nothing
there (``hydra.output_subdir: null``); its job logging's file handler is ``RunLogHandler``,
which keeps records in memory until the run has started (``ready``: the run's
``config.yaml``, written once the config, the data and the model were found good), then writes
them ahead of the rest into the run folder, with ``.hydra/hydra.yaml`` and
``.hydra/overrides.yaml``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

from toolkit.files import atomic_write_text
from toolkit.locks import owns

MAX_PENDING = 10_000  # records kept while waiting; a run logs a few dozen before it starts


class RunLogHandler(logging.Handler):
    """A log file in a run folder that appears only once the run has started (``ready`` exists)."""

    def __init__(self, filename: str | os.PathLike, ready: str | os.PathLike, encoding: str = "utf-8"):
        super().__init__()
        self.filename, self.ready, self.encoding = Path(filename), Path(ready), encoding
        self.pending: list[logging.LogRecord] = []
        self.file: logging.FileHandler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record``, or keep it while the run has not started."""
        try:
            if self.file is None and not (self.ready.exists() and owns(self.ready.parent)):  # not a refused run's
                if len(self.pending) < MAX_PENDING:
                    self.pending.append(record)
                return
            if self.file is None:
                self._open()
            self.file.emit(record)
        except Exception:  # logging's convention: report, never raise into the caller
            self.handleError(record)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        """Close the file; records of a run that never started are dropped (the console had them)."""
        try:
            if self.file is None and self.pending and self.ready.exists() and owns(self.ready.parent):
                self._open()
        except Exception:
            self.handleError(self.pending[0])
        if self.file is not None:
            self.file.close()
        self.pending = []
        super().close()

    def _open(self) -> None:
        self.file = logging.FileHandler(self.filename, encoding=self.encoding)
        self.file.setFormatter(self.formatter)
        for record in self.pending:
            self.file.emit(record)
        self.pending = []
        write_hydra_record(self.filename.parent / ".hydra")


def write_hydra_record(folder: Path) -> None:
    """Hydra's settings and the command line's overrides (``hydra.yaml``, ``overrides.yaml``),
    as hydra writes them into ``hydra.output_subdir``; nothing outside a hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    atomic_write_text(folder / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}))
    atomic_write_text(folder / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))
