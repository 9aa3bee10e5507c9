"""Atomic file writes: one helper for every file the toolkit writes (checkpoints, configs,
binarized data, manifests, tokenizers, corpora).

A write goes to a temporary file in the destination's folder (named ``.NAME.tmpPID`` so that a
later run can tell whose it is), is flushed to disk, then renamed over the destination; a
failed or interrupted write removes its temporary file, so the destination is either the old
file or the whole new one, and nothing half-written is left behind.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

TMP_MARK = ".tmp"  # temporary names: f".{name}{TMP_MARK}{pid}"


def temporary_path(path: Path) -> Path:
    """The temporary file an atomic write of ``path`` by this process uses."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", fsync: bool = True, **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces ``path``, on failure it is removed.

    :param mode: ``"wb"`` or ``"w"`` (text, then ``encoding`` defaults to UTF-8 and newlines to ``\\n``).
    :param fsync: flush the file to disk before the rename (survives a power loss, not only a kill).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "\n")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", fsync=fsync) as f:
        f.write(text)


def atomic_write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], None], fsync: bool = True) -> None:
    """Call ``write(binary_file)`` on a temporary file that then replaces ``path``."""
    with atomic_open(path, "wb", fsync=fsync) as f:
        write(f)
