"""Several results tables drawn as one: rows concatenated, other splits and beams refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.plotting import combine

NAMES = [Path("a.json"), Path("b.json")]


def test_tables_of_one_split_are_drawn_together_in_order():
    first = {"split": "test", "beam": 5, "rows": [{"model": "a"}]}
    second = {"split": "test", "beam": 5, "rows": [{"model": "b"}, {"model": "c"}]}
    combined = combine([first, second], NAMES)
    assert [row["model"] for row in combined["rows"]] == ["a", "b", "c"]
    assert combined["split"] == "test" and first["rows"] == [{"model": "a"}]  # the inputs unchanged


@pytest.mark.parametrize(("second", "message"), [
    ({"split": "valid", "beam": 5, "rows": []}, "b.json has split 'valid', a.json 'test'"),
    ({"split": "test", "beam": 1, "rows": []}, "b.json has beam 1, a.json 5"),
    ({"split": "test", "beam": 5, "adaptive": []}, "b.json has no rows"),
])
def test_tables_that_cannot_be_drawn_together_are_named(second, message):
    with pytest.raises(SystemExit, match=message):
        combine([{"split": "test", "beam": 5, "rows": []}, second], NAMES)
