"""A small slice of the suite's toy corpus for the distillation pipeline's tests."""

from __future__ import annotations

import pytest

from toolkit.data.preprocess import read_lines


@pytest.fixture
def small_data(trained_run, tmp_path):
    """300 training pairs, 40 valid and test pairs of the toy corpus, one source line empty."""
    folder = tmp_path / "data"
    folder.mkdir()
    for split, count in (("train", 300), ("valid", 40), ("test", 40)):
        for lang in ("src", "tgt"):
            lines = read_lines(trained_run / "data-bin" / "toy-text" / f"{split}.{lang}")[:count]
            if split == "train" and lang == "src":
                lines[7] = ""
            (folder / f"{split}.{lang}").write_text("".join(line + "\n" for line in lines))
    return folder
