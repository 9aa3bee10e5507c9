"""Dictionary, tokenizers and the binarized indexed dataset (toolkit.data.{dictionary,tokenizer,indexed_dataset})."""

import io

import numpy as np
import pytest
import torch

from toolkit.data.dictionary import SPECIALS, Dictionary
from toolkit.data.indexed_dataset import IndexedDataset, write_indexed
from toolkit.data.tokenizer import (PretokenizedTokenizer, SentencePieceTokenizer,
                                    tokenizer_from_state_dict)
from toolkit.data.toy_corpus import generate_pairs


def torch_roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# --- Dictionary -------------------------------------------------------------------------------

def test_specials_have_fixed_ids():
    d = Dictionary(list(SPECIALS) + ["a", "b"])
    assert SPECIALS == ("<s>", "<pad>", "</s>", "<unk>")
    assert (d.bos, d.pad, d.eos, d.unk) == (0, 1, 2, 3)
    assert [d.index(s) for s in SPECIALS] == [0, 1, 2, 3]
    assert d.index("a") == 4 and d.index("b") == 5 and len(d) == 6
    empty = Dictionary.build([])
    assert empty.symbols == list(SPECIALS)


def test_dictionary_must_start_with_specials():
    with pytest.raises(ValueError, match="must start with"):
        Dictionary(["a", "<s>", "<pad>", "</s>", "<unk>"])
    with pytest.raises(ValueError, match="must start with"):
        Dictionary(["<s>", "<pad>", "</s>"])


def test_duplicate_symbol_is_rejected():
    with pytest.raises(ValueError, match="twice"):
        Dictionary(list(SPECIALS) + ["a", "b", "a"])
    with pytest.raises(ValueError, match="twice"):
        Dictionary(list(SPECIALS) + ["<pad>"])


def test_build_orders_by_frequency_then_symbol():
    lines = ["b a c a", "a b d", "  e   a  ", ""]  # a:4 b:2 c,d,e:1
    d = Dictionary.build(lines)
    assert d.symbols == list(SPECIALS) + ["a", "b", "c", "d", "e"]


def test_build_min_count_and_max_size():
    lines = ["a a a b b c", "a b c d"]  # a:4 b:3 c:2 d:1
    assert Dictionary.build(lines, min_count=2).symbols[4:] == ["a", "b", "c"]
    assert Dictionary.build(lines, min_count=3).symbols[4:] == ["a", "b"]
    assert Dictionary.build(lines, min_count=5).symbols == list(SPECIALS)
    limited = Dictionary.build(lines, max_size=6)  # max_size counts the four specials
    assert len(limited) == 6 and limited.symbols[4:] == ["a", "b"]
    assert Dictionary.build(lines, max_size=2).symbols == list(SPECIALS)
    assert Dictionary.build(lines, min_count=2, max_size=5).symbols[4:] == ["a"]


def test_build_does_not_duplicate_specials_found_in_text():
    d = Dictionary.build(["<unk> x </s> <pad> x <s>"])
    assert d.symbols == list(SPECIALS) + ["x"]
    assert d.encode_tokens(["<unk>", "x", "</s>"]) == [3, 4, 2]


def test_unknown_symbols_map_to_unk():
    d = Dictionary.build(["hello world"])
    assert d.index("nope") == d.unk == 3
    assert d.encode_tokens(["hello", "nope", "world", "Hello"]) == [d.index("hello"), 3, d.index("world"), 3]
    ids = [d.bos, d.index("hello"), d.unk, d.pad, d.eos]
    assert d.symbols_of(ids) == ["hello", "<unk>"]
    assert d.symbols_of(ids, strip_specials=False) == ["<s>", "hello", "<unk>", "<pad>", "</s>"]


def test_dictionary_state_round_trip():
    d = Dictionary.build(["the cat sat on the mat", "a dog"], min_count=1)
    state = torch_roundtrip(d.state_dict())
    restored = Dictionary.from_state_dict(state)
    assert restored == d and restored.symbols == d.symbols
    assert all(restored.index(s) == i for i, s in enumerate(d.symbols))
    assert restored != Dictionary.build(["the cat"])


# --- Tokenizers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_lines():
    pairs = generate_pairs(300, seed=5)
    return [side for pair in pairs for side in pair]


@pytest.fixture(scope="module")
def spm_tokenizer(toy_lines):
    return SentencePieceTokenizer.train(toy_lines, vocab_size=200)


def test_sentencepiece_round_trip_is_exact(spm_tokenizer, toy_lines):
    ids = spm_tokenizer.encode(toy_lines)
    assert len(ids) == len(toy_lines)
    for line, seq in zip(toy_lines, ids):
        assert seq and all(isinstance(i, int) for i in seq)
        assert spm_tokenizer.dictionary.unk not in seq
        assert spm_tokenizer.decode(seq) == line
    # subwords, not characters: sequences are clearly shorter than the text
    assert sum(map(len, ids)) < 0.6 * sum(map(len, toy_lines))


def test_sentencepiece_vocabulary_and_special_ids(spm_tokenizer):
    d = spm_tokenizer.dictionary
    assert 5 < len(d) <= 200
    assert d.symbols[:4] == list(SPECIALS)
    assert (d.bos, d.pad, d.eos, d.unk) == (0, 1, 2, 3)
    proc = spm_tokenizer.processor
    assert (proc.bos_id(), proc.pad_id(), proc.eos_id(), proc.unk_id()) == (0, 1, 2, 3)
    assert proc.get_piece_size() == len(d)
    for i in range(4, len(d)):
        assert d.symbols[i] == proc.id_to_piece(i)
    # decoding ignores <s>, <pad> and </s> around the pieces
    seq = spm_tokenizer.encode(["the dog sees the cat"])[0]
    assert spm_tokenizer.decode([d.bos] + seq + [d.eos, d.pad, d.pad]) == "the dog sees the cat"
    assert spm_tokenizer.decode(torch.tensor(seq)) == "the dog sees the cat"


def test_sentencepiece_state_dict_round_trip(spm_tokenizer, toy_lines):
    state = spm_tokenizer.state_dict()
    assert state["kind"] == "sentencepiece"
    loaded = torch_roundtrip(state)  # weights_only=True must accept it
    restored = tokenizer_from_state_dict(loaded)
    assert isinstance(restored, SentencePieceTokenizer)
    assert restored.model_proto == spm_tokenizer.model_proto
    assert restored.dictionary == spm_tokenizer.dictionary
    assert restored.encode(toy_lines) == spm_tokenizer.encode(toy_lines)
    unseen = ["zebra quux", "the Dog!"]
    assert restored.encode(unseen) == spm_tokenizer.encode(unseen)


def test_sentencepiece_training_is_reproducible(spm_tokenizer, toy_lines):
    again = SentencePieceTokenizer.train(toy_lines, vocab_size=200)
    assert again.model_proto == spm_tokenizer.model_proto


def test_pretokenized_keeps_tokens_as_given():
    lines = ["it &apos;s the dog &apos;s bone .", "don 't stop , O'Neil !", "it &apos;s"]
    tok = PretokenizedTokenizer.train(lines, vocab_size=100)
    d = tok.dictionary
    for token in ("&apos;s", "'t", "don", "O'Neil", ",", "."):
        assert d.index(token) >= 4, token
    assert "&apos;" not in d.indices and "s" not in d.indices and "'" not in d.indices
    ids = tok.encode(lines)
    assert ids[0] == [d.index(t) for t in "it &apos;s the dog &apos;s bone .".split()]
    for line, seq in zip(lines, ids):
        assert tok.decode(seq) == line
    assert tok.decode([d.bos] + ids[1] + [d.eos, d.pad]) == "don 't stop , O'Neil !"
    # whitespace is normalised to single spaces, unknown words become <unk>
    assert tok.decode(tok.encode(["  it   &apos;s \t unseen "])[0]) == "it &apos;s <unk>"


def test_pretokenized_vocab_size_and_min_count():
    lines = ["a a a b b c", "a b c d"]
    assert PretokenizedTokenizer.train(lines, vocab_size=6).dictionary.symbols[4:] == ["a", "b"]
    assert PretokenizedTokenizer.train(lines, vocab_size=100, min_count=2).dictionary.symbols[4:] == ["a", "b", "c"]


def test_pretokenized_state_dict_round_trip():
    lines = ["don 't go", "it &apos;s fine"]
    tok = PretokenizedTokenizer.train(lines, vocab_size=100)
    restored = tokenizer_from_state_dict(torch_roundtrip(tok.state_dict()))
    assert isinstance(restored, PretokenizedTokenizer)
    assert restored.dictionary == tok.dictionary
    assert restored.encode(lines + ["unknown words"]) == tok.encode(lines + ["unknown words"])


def test_unknown_tokenizer_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        tokenizer_from_state_dict({"kind": "bpe"})


# --- Indexed dataset --------------------------------------------------------------------------

def read_all(prefix):
    data = IndexedDataset(prefix)
    return data, [data[i].tolist() for i in range(len(data))]


def test_indexed_round_trip_uint16(tmp_path):
    sequences = [[5, 6, 7], [], [65534, 0, 1], [4], []]
    write_indexed(tmp_path / "a", sequences, vocab_size=65535)
    data, back = read_all(tmp_path / "a")
    assert back == sequences
    assert len(data) == 5 and data.sizes.tolist() == [3, 0, 3, 1, 0]
    assert data.tokens.dtype == np.uint16
    assert data[2].dtype == np.int64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.idx"]  # no temporary files left


def test_indexed_round_trip_int32_for_large_vocabularies(tmp_path):
    sequences = [[70000, 65535, 65536, 3], [], [99999]]
    write_indexed(tmp_path / "big", sequences, vocab_size=100000)
    data, back = read_all(tmp_path / "big")
    assert back == sequences
    assert data.tokens.dtype == np.int32


def test_indexed_empty_dataset_and_all_empty_sequences(tmp_path):
    write_indexed(tmp_path / "none", [], vocab_size=10)
    data, back = read_all(tmp_path / "none")
    assert len(data) == 0 and back == [] and data.sizes.tolist() == []
    write_indexed(tmp_path / "blank", [[], [], []], vocab_size=10)
    data, back = read_all(tmp_path / "blank")
    assert back == [[], [], []] and data.sizes.tolist() == [0, 0, 0]


def test_indexed_overwrite_and_missing_file(tmp_path):
    write_indexed(tmp_path / "x", [[1, 2, 3]], vocab_size=10)
    write_indexed(tmp_path / "x", [[4], [5, 6]], vocab_size=10)
    assert read_all(tmp_path / "x")[1] == [[4], [5, 6]]
    (tmp_path / "x.idx").unlink()
    with pytest.raises(FileNotFoundError, match="x.idx"):
        IndexedDataset(tmp_path / "x")
