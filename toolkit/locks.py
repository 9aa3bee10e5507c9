"""Folder locks: a run folder (``checkpoint.save_dir``) or a binarized data folder
(``task.destdir``) belongs to one live process at a time.

The lock is ``fcntl.flock`` on a lock file in the folder: the kernel releases it when its
process ends, however it ends (``kill -9`` included), so a killed owner never leaves it stuck.
The file records its owner (pid, host, start time, purpose) for the messages of those who find
it taken; a file still naming an owner when the lock is free means that owner died, and the new
owner says it takes over. A released lock's file is removed (by its owner, while still holding
it; an acquirer checks it locked the file that is still at the path, so the removal is safe).
flock works across hosts on Linux NFS (emulated with byte-range locks).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from toolkit.errors import UserError

logger = logging.getLogger(__name__)

RUN_LOCK = ".lock"  # in checkpoint.save_dir
DATA_LOCK = ".data.lock"  # in task.destdir (another name: destdir may be the save_dir itself)
_POLL_S = 0.2
_REPORT_EVERY_S = 60.0


class FolderLockedError(UserError, RuntimeError):
    """A folder held by another live process."""


@contextmanager
def folder_lock(folder: str | os.PathLike, name: str = RUN_LOCK, purpose: str = "training",
                wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the lock ``folder/name`` (creating the folder) for the ``with`` block.

    :param purpose: what the holder does, for others' messages ("training", "preparing data").
    :param wait_s: 0 fails at once if another process holds it; otherwise wait up to this many
        seconds (saying whom it waits for), then fail.
    :raises FolderLockedError: naming the folder and the process (pid, host) that holds it.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fd = _acquire_waiting(path, purpose, wait_s)
    try:
        _take_over(fd, path, purpose)
        yield path
    finally:
        path.unlink(missing_ok=True)  # still held: a waiter that locked this file will retry
        os.close(fd)
        if created:  # a run that failed before writing anything leaves no empty folder behind
            try:
                folder.rmdir()
            except OSError:
                pass


def is_locked(folder: str | os.PathLike, name: str = RUN_LOCK) -> bool:
    """Whether a live process holds ``folder/name`` now (for checks: it takes the lock an instant)."""
    try:
        fd = os.open(Path(folder) / name, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # the file of a dead owner stays for the next owner's message
    return False


def owns(folder: str | os.PathLike, name: str = RUN_LOCK) -> bool:
    """Whether this process holds ``folder/name`` (as its lock file records): for writers that
    must not touch a folder before its run has it, such as the run's log."""
    owner = owner_of(Path(folder) / name)
    return owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname()


def owner_of(path: Path) -> dict[str, Any]:
    """What the lock file at ``path`` says of its owner (``{}`` if nothing readable)."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def describe(owner: dict[str, Any]) -> str:
    """``process 123 on host (training since ...)``, or a placeholder for an unknown owner."""
    if not owner:
        return "a process that has not yet written its name"
    return (f"process {owner.get('pid', '?')} on {owner.get('host', '?')} "
            f"({owner.get('purpose', '?')} since {owner.get('started', '?')})")


def _acquire_waiting(path: Path, purpose: str, wait_s: float) -> int:
    start, last_report = time.monotonic(), None
    while True:
        fd = _try_lock(path)
        if fd is not None:
            return fd
        holder = describe(owner_of(path))
        waited = time.monotonic() - start
        if waited >= wait_s:
            after = f" after waiting {waited:.1f} s" if wait_s else ""
            raise FolderLockedError(
                f"{path.parent} is in use{after}: {holder} holds its lock {path}. Wait for it to finish or "
                f"stop it, or use another folder; {purpose} needs the folder to itself")
        if last_report is None or time.monotonic() - last_report >= _REPORT_EVERY_S:
            logger.warning("waiting for %s to release %s (up to %g s)", holder, path, wait_s)
            last_report = time.monotonic()
        time.sleep(_POLL_S)


def _try_lock(path: Path) -> int | None:
    """A descriptor holding the lock on the file now at ``path``, or None if another holds it."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder's creator removed it (empty) as it released the lock
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            opened, current = os.fstat(fd), os.stat(path)
            if (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its owner removed the file as it released it: lock the new one


def _take_over(fd: int, path: Path, purpose: str) -> None:
    """Record this process as the owner, saying so if a dead owner's record was still there."""
    previous = os.pread(fd, 1 << 16, 0)
    if previous.strip():
        try:
            owner = json.loads(previous)
        except ValueError:
            owner = {}
        logger.warning("taking over the lock %s: its owner, %s, ended without releasing it",
                       path, describe(owner if isinstance(owner, dict) else {}))
    record = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
              "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    os.fsync(fd)
