"""Filtering and collation of source/target pairs (toolkit.data.language_pair_dataset)."""

import logging

import numpy as np
import pytest
import torch

from toolkit.data.dictionary import Dictionary
from toolkit.data.indexed_dataset import IndexedDataset, write_indexed
from toolkit.data.language_pair_dataset import LanguagePairDataset

DICT = Dictionary(["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, 30)])
BOS, PAD, EOS = DICT.bos, DICT.pad, DICT.eos


def make(tmp_path, src, tgt, max_positions=None, name="test"):
    write_indexed(tmp_path / "d.src", src, len(DICT))
    write_indexed(tmp_path / "d.tgt", tgt, len(DICT))
    return LanguagePairDataset(IndexedDataset(tmp_path / "d.src"), IndexedDataset(tmp_path / "d.tgt"),
                               DICT, DICT, max_positions=max_positions, name=name)


def test_sizes_count_end_of_sentence(tmp_path):
    data = make(tmp_path, [[4, 5], [6]], [[7], [8, 9, 10]])
    assert data.src_sizes.tolist() == [3, 2]
    assert data.tgt_sizes.tolist() == [2, 4]
    assert [data.num_tokens(i) for i in range(2)] == [3, 4]
    assert len(data) == 2 and data.indices.tolist() == [0, 1]
    assert data.skipped == {"empty": 0, "too_long": 0}


def test_empty_and_overlong_pairs_are_skipped_and_counted(tmp_path, caplog):
    src = [[4], [], [5, 6], [7] * 9, [8], [9, 10], [], [11]]
    tgt = [[12], [13], [], [14], [15] * 9, [16], [], [17, 18, 19]]
    #      keep  empty empty long  long   keep  empty keep
    with caplog.at_level(logging.WARNING):
        data = make(tmp_path, src, tgt, max_positions=8, name="valid")
    assert data.indices.tolist() == [0, 5, 7]  # original order kept
    assert len(data) == 3
    assert data.skipped == {"empty": 3, "too_long": 2}
    assert "valid" in caplog.text and "3" in caplog.text and "2" in caplog.text


def test_max_positions_includes_end_of_sentence(tmp_path):
    src = [[4] * 7, [4] * 8, [4] * 3]
    tgt = [[5] * 3, [5] * 3, [5] * 8]
    data = make(tmp_path, src, tgt, max_positions=8)  # 7 tokens + </s> fits, 8 + </s> does not
    assert data.indices.tolist() == [0]
    assert data.skipped == {"empty": 0, "too_long": 2}
    no_limit = make(tmp_path, src, tgt, max_positions=None)
    assert no_limit.indices.tolist() == [0, 1, 2] and no_limit.skipped["too_long"] == 0


def test_mismatched_sides_are_rejected(tmp_path):
    write_indexed(tmp_path / "a", [[4], [5]], len(DICT))
    write_indexed(tmp_path / "b", [[4]], len(DICT))
    with pytest.raises(ValueError, match="2 source but 1 target"):
        LanguagePairDataset(IndexedDataset(tmp_path / "a"), IndexedDataset(tmp_path / "b"), DICT, DICT)


def test_collate(tmp_path):
    src = [[4, 5, 6], [7], [8, 9]]
    tgt = [[10, 11], [12, 13, 14, 15], [16]]
    data = make(tmp_path, src, tgt)
    batch = data.collate(np.array([2, 0, 1]))
    net = batch["net_input"]
    assert batch["id"].tolist() == [2, 0, 1]
    assert net["src_tokens"].tolist() == [
        [8, 9, EOS, PAD],
        [4, 5, 6, EOS],
        [7, EOS, PAD, PAD],
    ]
    assert net["src_lengths"].tolist() == [3, 4, 2]
    assert batch["target"].tolist() == [
        [16, EOS, PAD, PAD, PAD],
        [10, 11, EOS, PAD, PAD],
        [12, 13, 14, 15, EOS],
    ]
    assert net["prev_output_tokens"].tolist() == [
        [BOS, 16, PAD, PAD, PAD],
        [BOS, 10, 11, PAD, PAD],
        [BOS, 12, 13, 14, 15],
    ]
    assert batch["ntokens"] == 2 + 3 + 5
    assert batch["nsentences"] == 3
    for tensor in (net["src_tokens"], net["src_lengths"], net["prev_output_tokens"], batch["target"], batch["id"]):
        assert tensor.dtype == torch.int64


def test_collate_invariants_on_random_data(tmp_path):
    rng = np.random.default_rng(0)
    src = [rng.integers(4, len(DICT), rng.integers(1, 12)).tolist() for _ in range(40)]
    tgt = [rng.integers(4, len(DICT), rng.integers(1, 12)).tolist() for _ in range(40)]
    data = make(tmp_path, src, tgt)
    indices = rng.permutation(40)[:17]
    batch = data.collate(indices)
    s, t = batch["net_input"]["src_tokens"], batch["target"]
    prev = batch["net_input"]["prev_output_tokens"]
    assert s.shape == (17, max(len(src[i]) for i in indices) + 1)
    assert t.shape == prev.shape == (17, max(len(tgt[i]) for i in indices) + 1)
    for row, i in enumerate(indices):
        n, m = len(src[i]), len(tgt[i])
        assert s[row, :n].tolist() == src[i] and s[row, n] == EOS and (s[row, n + 1:] == PAD).all()
        assert t[row, :m].tolist() == tgt[i] and t[row, m] == EOS and (t[row, m + 1:] == PAD).all()
        # teacher forcing input: target shifted right by one, starting with <s>
        assert prev[row, 0] == BOS
        assert prev[row, 1:m + 1].tolist() == t[row, :m].tolist()
        assert (prev[row, m + 1:] == PAD).all()
    assert batch["net_input"]["src_lengths"].tolist() == [len(src[i]) + 1 for i in indices]
    assert batch["ntokens"] == int((t != PAD).sum()) == sum(len(tgt[i]) + 1 for i in indices)


def test_empty_lines_from_text_files_are_skipped_end_to_end(tmp_path):
    """Blank lines survive preprocessing as empty sequences and are dropped (and counted) on load."""
    from toolkit.data.preprocess import PreprocessSettings, load_tokenizers, preprocess

    text = tmp_path / "text"
    text.mkdir()
    src = ["a b c", "", "d e", "f", "g h i j k l m n", "o p"]
    tgt = ["A B", "B", "", "F G", "H", "P"]
    # CRLF line ends on one side, no final newline on the other: both still read as 6 lines
    (text / "train.src").write_bytes("\r\n".join(src).encode() + b"\r\n")
    (text / "train.tgt").write_bytes("\n".join(tgt).encode())
    settings = PreprocessSettings("src", "tgt", ("train",), "pretokenized", 100, False, "unigram", 1.0, 1, 1)
    dest = preprocess(text, tmp_path / "bin", settings)
    src_tok, tgt_tok = load_tokenizers(dest)
    data = LanguagePairDataset(IndexedDataset(dest / "train.src"), IndexedDataset(dest / "train.tgt"),
                               src_tok.dictionary, tgt_tok.dictionary, max_positions=6, name="train")
    assert data.skipped == {"empty": 2, "too_long": 1}
    assert data.indices.tolist() == [0, 3, 5]
    batch = data.collate(data.indices)
    assert [src_tok.decode(row) for row in batch["net_input"]["src_tokens"]] == ["a b c", "f", "o p"]
    assert [tgt_tok.decode(row) for row in batch["target"]] == ["A B", "F G", "P"]
    assert "\r" not in "".join(src_tok.dictionary.symbols)
