"""Token <-> id mapping with the special symbols every model relies on."""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"
SPECIALS = (BOS, PAD, EOS, UNK)  # ids 0..3, in sentencepiece models too


class Dictionary:
    """An ordered vocabulary whose first four symbols are ``<s> <pad> </s> <unk>``."""

    bos, pad, eos, unk = 0, 1, 2, 3

    def __init__(self, symbols: Sequence[str]):
        if tuple(symbols[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a dictionary must start with {SPECIALS}, got {tuple(symbols[:4])}")
        self.symbols = list(symbols)
        self.indices = {symbol: i for i, symbol in enumerate(self.symbols)}
        if len(self.indices) != len(self.symbols):
            raise ValueError("a dictionary cannot hold the same symbol twice")

    @classmethod
    def build(cls, lines: Iterable[str], min_count: int = 1, max_size: int | None = None) -> "Dictionary":
        """Count whitespace-separated tokens; keep those seen ``min_count`` times, most frequent first."""
        counts = Counter(token for line in lines for token in line.split())
        kept = [t for t, c in sorted(counts.items(), key=lambda tc: (-tc[1], tc[0])) if c >= min_count]
        kept = [t for t in kept if t not in SPECIALS]
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.symbols)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dictionary) and self.symbols == other.symbols

    def index(self, symbol: str) -> int:
        return self.indices.get(symbol, self.unk)

    def encode_tokens(self, tokens: Iterable[str]) -> list[int]:
        return [self.indices.get(t, self.unk) for t in tokens]

    def symbols_of(self, ids: Iterable[int], strip_specials: bool = True) -> list[str]:
        skip = {self.bos, self.pad, self.eos} if strip_specials else set()
        return [self.symbols[i] for i in ids if i not in skip]

    def state_dict(self) -> dict:
        return {"symbols": list(self.symbols)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Dictionary":
        return cls(state["symbols"])
