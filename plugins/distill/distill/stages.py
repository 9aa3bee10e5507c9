"""Cached stages: each writes its outputs with a stamp of what it was made from (hashes of its
inputs and settings); a rerun skips a stage whose stamp matches and redoes one whose inputs
changed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from toolkit.files import atomic_write_text

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


def run_stage(folder: Path, name: str, key: str, work: Callable[[Path], dict]) -> dict:
    """Run ``work(folder)`` unless ``folder/stamp.json`` says it was done for ``key``; the stamp
    (with what ``work`` returns) is written last, so an interrupted stage is redone or resumed."""
    stamp = folder / "stamp.json"
    if stamp.is_file():
        record = json.loads(stamp.read_text())
        if record.get("key") == key:
            logger.info("%s: done before (%s), skipped", name, folder)
            return record
        logger.info("%s: its inputs changed since %s was made: redone", name, folder)
        os.remove(stamp)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"key": key, **work(folder)}
    atomic_write_text(stamp, json.dumps(record, indent=1))
    return record
