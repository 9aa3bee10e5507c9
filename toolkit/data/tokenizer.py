"""Text <-> token ids: sentencepiece subwords, or text that is already tokenized.

Both tokenizers share one interface so the task, the preprocessor and generation never ask
which one they hold. Sentencepiece models are trained with the dictionary's special ids, so
their piece ids are dictionary ids.
"""

from __future__ import annotations

import io
import logging
from typing import Iterable, Sequence

import sentencepiece as spm
import torch

from toolkit.data.dictionary import SPECIALS, Dictionary

logger = logging.getLogger(__name__)


class Tokenizer:
    """Encodes lines into dictionary ids and decodes ids back into detokenized text."""

    kind = "base"
    dictionary: Dictionary

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece model; its serialized proto travels in checkpoints."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        self.model_proto = bytes(model_proto)
        self.processor = spm.SentencePieceProcessor(model_proto=self.model_proto)
        pieces = [self.processor.id_to_piece(i) for i in range(self.processor.get_piece_size())]
        pieces[: len(SPECIALS)] = SPECIALS  # sentencepiece names them <s>, <pad>, </s>, <unk> too
        self.dictionary = Dictionary(pieces)

    @classmethod
    def train(cls, lines: Iterable[str], vocab_size: int, model_type: str = "unigram",
              character_coverage: float = 1.0, seed: int = 1, threads: int = 2) -> "SentencePieceTokenizer":
        """Train a model on ``lines``; ``vocab_size`` is an upper bound for tiny corpora."""
        model = io.BytesIO()
        spm.set_random_generator_seed(seed)  # sampling of over-large corpora is reproducible
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
            model_type=model_type, character_coverage=character_coverage,
            bos_id=Dictionary.bos, pad_id=Dictionary.pad, eos_id=Dictionary.eos, unk_id=Dictionary.unk,
            hard_vocab_limit=False, input_sentence_size=2_000_000, shuffle_input_sentence=True,
            num_threads=threads, minloglevel=2,
        )
        return cls(model.getvalue())

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        return self.processor.encode(list(lines), out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        specials = {Dictionary.bos, Dictionary.pad, Dictionary.eos}
        return self.processor.decode([int(i) for i in ids if int(i) not in specials])

    def state_dict(self) -> dict:
        proto = torch.frombuffer(bytearray(self.model_proto), dtype=torch.uint8)
        return {"kind": self.kind, "model_proto": proto}


class PretokenizedTokenizer(Tokenizer):
    """Text that is already tokenized (e.g. Moses-tokenized IWSLT'14): split on whitespace."""

    kind = "pretokenized"

    def __init__(self, dictionary: Dictionary):
        self.dictionary = dictionary

    @classmethod
    def train(cls, lines: Iterable[str], vocab_size: int, min_count: int = 1) -> "PretokenizedTokenizer":
        return cls(Dictionary.build(lines, min_count=min_count, max_size=vocab_size))

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        return [self.dictionary.encode_tokens(line.split()) for line in lines]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.dictionary.symbols_of(int(i) for i in ids))

    def state_dict(self) -> dict:
        return {"kind": self.kind, "dictionary": self.dictionary.state_dict()}


def tokenizer_from_state_dict(state: dict) -> Tokenizer:
    if state["kind"] == SentencePieceTokenizer.kind:
        return SentencePieceTokenizer(state["model_proto"].numpy().tobytes())
    if state["kind"] == PretokenizedTokenizer.kind:
        return PretokenizedTokenizer(Dictionary.from_state_dict(state["dictionary"]))
    raise ValueError(f"unknown tokenizer kind {state['kind']!r}")
