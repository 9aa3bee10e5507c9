"""Bad text is reported by file and line: undecodable bytes, empty training files."""

import logging

import pytest

from toolkit.data.indexed_dataset import IndexedDataset
from toolkit.data.preprocess import DataError, PreprocessSettings, preprocess, read_lines
from toolkit.data.toy_corpus import write_toy_corpus


def settings(**overrides) -> PreprocessSettings:
    values = dict(source_lang="src", target_lang="tgt", splits=("train", "valid"), tokenizer="pretokenized",
                  vocab_size=200, joint_vocab=True, spm_model_type="unigram", character_coverage=1.0,
                  min_count=1, seed=1)
    values.update(overrides)
    return PreprocessSettings(**values)


@pytest.fixture
def corpus(tmp_path):
    return write_toy_corpus(tmp_path / "text", n_train=60, n_valid=10, n_test=10)


def spoil(path, line, raw=b"caf\xe9 au lait"):
    """Replace line ``line`` (from 1) of ``path`` by ``raw`` bytes (Latin-1 here: not UTF-8)."""
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = raw
    path.write_bytes(b"\n".join(lines))


def test_read_lines_names_the_file_and_the_first_undecodable_line(tmp_path):
    path = tmp_path / "text.de"
    path.write_bytes(b"gut\r\nsehr gut\n" + b"caf\xe9\n" + b"\xff\n")
    with pytest.raises(DataError, match=rf"{path} line 3 is not UTF-8 text \(byte 0xe9 at column 4\)"):
        read_lines(path)
    path.write_bytes(b"gut\r\n\nende")
    assert read_lines(path) == ["gut", "", "ende"]


def test_undecodable_training_text_fails_naming_file_and_line(corpus, tmp_path):
    spoil(corpus / "train.tgt", 7)
    with pytest.raises(DataError, match=r"train\.tgt line 7 is not UTF-8 text .*task\.skip_undecodable=true"):
        preprocess(corpus, tmp_path / "bin", settings())
    assert not (tmp_path / "bin").exists()


def test_undecodable_pairs_can_be_skipped_and_are_counted(corpus, tmp_path, caplog):
    spoil(corpus / "train.tgt", 7)
    spoil(corpus / "train.src", 9)
    spoil(corpus / "valid.src", 2)
    with caplog.at_level(logging.WARNING, logger="toolkit.data.preprocess"):
        preprocess(corpus, tmp_path / "bin", settings(skip_undecodable=True))
    assert "train: skipped 2 of 60 pairs with a line that is not UTF-8 text" in caplog.text
    assert "lines 7, 9 of" in caplog.text
    assert "valid: skipped 1 of 10 pairs" in caplog.text
    sizes = {name: len(IndexedDataset(str(tmp_path / "bin" / name))) for name in ("train.src", "train.tgt", "valid.tgt")}
    assert sizes == {"train.src": 58, "train.tgt": 58, "valid.tgt": 9}


@pytest.mark.parametrize("content", [b"", b"\n\n  \n\t\n"])
@pytest.mark.parametrize("tokenizer", ["sentencepiece", "pretokenized"])
def test_empty_or_blank_training_files_fail_clearly(corpus, tmp_path, content, tokenizer):
    lines = content.count(b"\n")
    (corpus / "train.src").write_bytes(content)
    (corpus / "train.tgt").write_bytes(b"x\n" * lines)
    blank = f"{corpus / 'train.src'}" + ("" if lines else f" and {corpus / 'train.tgt'}")  # empty: both
    with pytest.raises(DataError, match=rf"no non-empty training pairs in {blank} \({lines} lines"):
        preprocess(corpus, tmp_path / "bin", settings(tokenizer=tokenizer))


def test_mismatched_line_counts_still_fail(corpus, tmp_path):
    (corpus / "valid.tgt").write_text("one line\n")
    with pytest.raises(DataError, match=r"valid: .*valid\.src has 10 lines but .*valid\.tgt has 1"):
        preprocess(corpus, tmp_path / "bin", settings())
