"""Cached stages: each writes its outputs with a stamp of what it was made from (hashes of its
inputs and settings); a rerun skips a stage whose stamp matches, resumes one that was
interrupted with the same inputs, and redoes one whose inputs changed from an empty folder."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

import torch.distributed as dist

from toolkit.files import atomic_write_text
from toolkit.training.distributed import DistributedContext

logger = logging.getLogger("toolkit-distill")


def fingerprint(*parts: Any) -> str:
    """A hash of settings (JSON-able values) and files (``Path``: their bytes)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def run_stage(folder: Path, name: str, key: str, work: Callable[[Path], dict],
              context: DistributedContext | None = None, everyone: bool = False) -> dict:
    """Run ``work(folder)`` unless ``folder/stamp.json`` says it was done for ``key``; the stamp
    (with what ``work`` returns) is written last. ``folder/started.json`` records the key the
    folder's work began with: an interrupted stage with the same key resumes in place (its
    chunks or checkpoints kept), while another key's outputs are removed first, so nothing
    made from old inputs (a checkpoint at its last update, a teacher export) is reused.

    Under torchrun (``context``) every rank reads the stamp; ``work`` runs on every rank
    (``everyone``: a sharded or data-parallel stage) or on rank 0 while the others wait, and
    rank 0 writes the stamp.
    """
    context = context or DistributedContext()
    stamp = folder / "stamp.json"
    record = json.loads(stamp.read_text()) if stamp.is_file() else None
    if record is not None and record.get("key") == key:
        logger.info("%s: done before (%s), skipped", name, folder)
        return record
    _barrier(context)  # every rank has read the stamp before rank 0 removes it
    if context.is_master:
        _prepare(folder, name, key, finished=record is not None)
    _barrier(context)
    record = {"key": key, **work(folder)} if everyone or context.is_master else None
    if context.is_master:
        atomic_write_text(stamp, json.dumps(record, indent=1))
    if _barrier(context) and not context.is_master and record is None:
        record = json.loads(stamp.read_text())
    return record


def _prepare(folder: Path, name: str, key: str, finished: bool) -> None:
    """Empty ``folder`` unless its work began with ``key``; then record ``key`` as begun."""
    started = folder / "started.json"
    begun = json.loads(started.read_text()).get("key") if started.is_file() else None
    if begun == key and not finished:
        logger.info("%s: resuming the interrupted work in %s", name, folder)
    elif folder.exists():
        logger.info("%s: its inputs changed since %s was made: redone from scratch", name, folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(started, json.dumps({"key": key}))


def _barrier(context: DistributedContext) -> bool:
    """Wait for every rank, if the job's process group is up (training tears it down at its
    end); returns whether it waited."""
    if context.enabled and dist.is_initialized():
        dist.barrier()
        return True
    return False
