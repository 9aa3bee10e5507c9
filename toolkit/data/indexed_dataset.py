"""Binarized token sequences: one flat memory-mapped array plus an offsets index.

``NAME.bin`` holds every sequence's ids back to back (uint16 when the vocabulary fits, else
int32); ``NAME.idx`` holds the int64 offsets of each sequence (N + 1 entries).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from toolkit.files import atomic_open


def write_indexed(prefix: str | os.PathLike, sequences: Sequence[Sequence[int]], vocab_size: int) -> None:
    """Write ``prefix.bin`` / ``prefix.idx`` atomically."""
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.int32
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for s in sequences for t in s), dtype=dtype, count=int(offsets[-1]))
    prefix = Path(prefix)
    for suffix, array in ((".bin", flat), (".idx", offsets)):
        with atomic_open(prefix.with_name(prefix.name + suffix)) as f:
            f.write(np.dtype(array.dtype).str.encode().ljust(8))  # 8-byte dtype header
            array.tofile(f)


class IndexedDataset:
    """Read-only view of a binarized split: ``dataset[i]`` is an int64 array of ids."""

    def __init__(self, prefix: str | os.PathLike):
        prefix = Path(prefix)
        self.tokens = _read(prefix.with_name(prefix.name + ".bin"))
        self.offsets = np.asarray(_read(prefix.with_name(prefix.name + ".idx")))
        self.sizes = np.diff(self.offsets)  # (N,) tokens per sequence

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]].astype(np.int64)


def _read(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"binarized data file {path} is missing")
    with open(path, "rb") as f:
        dtype = np.dtype(f.read(8).strip().decode())
    if path.stat().st_size == 8:  # an empty array cannot be memory-mapped
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=8)
