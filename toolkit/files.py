"""Atomic file writes: one helper for every file the toolkit writes (checkpoints, configs,
binarized data, manifests, tokenizers, corpora).

A write goes to a temporary file in the destination's folder (named ``.NAME.tmpPID`` so that a
later run can tell whose it is), is flushed to disk, then renamed over the destination; a
failed or interrupted write removes its temporary file, so the destination is either the old
file or the whole new one, and nothing half-written is left behind.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

logger = logging.getLogger(__name__)

TMP_MARK = ".tmp"  # temporary names: f".{name}{TMP_MARK}{pid}"
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.tmp(?P<pid>\d+)")  # temporary_path's names
_OLD_TEMPORARY = re.compile(r"[^.].*\.tmp")  # NAME.tmp, written by earlier versions (no owner recorded)


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


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[tuple[Path, int]]:
    """Remove the temporary files of writes that no live process will finish, and log them.

    Stale are ``.NAME.tmpPID`` whose process is gone (a kill or a crash mid-write) and the
    ``NAME.tmp`` of earlier versions. Call it holding the folder's lock (``toolkit.locks``).

    :return: ``[(path, bytes)]`` removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.rglob("*.tmp*") if recursive else folder.glob("*.tmp*")):
        match = _TEMPORARY.fullmatch(path.name)
        stale = (not _alive(int(match["pid"]))) if match else bool(_OLD_TEMPORARY.fullmatch(path.name))
        if stale and path.is_file() and not path.is_symlink():
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append((path, size))
    if removed:
        logger.warning("removed %d stale temporary file(s) of interrupted writes in %s: %s", len(removed), folder,
                       ", ".join(f"{p.relative_to(folder)} ({size} bytes)" for p, size in removed))
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:
        return False
    return True


def check_output_path(output: Path, source: Path) -> None:
    """Refuse, before any work, an output that would replace its own input or has no folder."""
    from toolkit.errors import ConfigError

    if output.resolve() == source.resolve():
        raise ConfigError(f"the output would replace its input {source}: give another path")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"no folder {output.parent} to write {output.name} in")
