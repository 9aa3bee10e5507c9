"""The console scripts as a user runs them."""

import subprocess
import sys
from pathlib import Path

from toolkit.data.toy_corpus import write_toy_corpus

BIN = Path(sys.executable).parent


def test_toolkit_preprocess_binarizes_a_text_folder(tmp_path):
    write_toy_corpus(tmp_path / "text", n_train=300, n_valid=20, n_test=20)
    for split in ("train", "valid", "test"):  # a real language pair's file names
        for old, new in (("src", "en"), ("tgt", "xx")):
            (tmp_path / "text" / f"{split}.{old}").rename(tmp_path / "text" / f"{split}.{new}")
    result = subprocess.run(
        [str(BIN / "toolkit-preprocess"), f"task.data={tmp_path / 'text'}", "task.source_lang=en",
         "task.target_lang=xx", "task.vocab_size=150", "task.joint_vocab=false",
         f"task.destdir={tmp_path / 'bin'}", f"checkpoint.save_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = {p.name for p in (tmp_path / "bin").iterdir()}
    for split in ("train", "valid", "test"):
        assert {f"{split}.en.bin", f"{split}.en.idx", f"{split}.xx.bin", f"{split}.xx.idx"} <= names
    assert {"tokenizer.src.pt", "tokenizer.tgt.pt", "manifest.json"} <= names


def test_toolkit_train_reports_a_missing_data_folder(tmp_path):
    result = subprocess.run([str(BIN / "toolkit-train"), f"task.data={tmp_path / 'nope'}",
                             f"checkpoint.save_dir={tmp_path / 'run'}"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode != 0
    assert f"data folder {tmp_path / 'nope'} does not exist" in result.stdout + result.stderr
