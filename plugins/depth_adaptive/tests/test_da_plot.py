"""The plot script draws a results file: fixed-depth families as lines, policies as points."""

from __future__ import annotations

import json

import pytest

from depth_adaptive.plot import main as plot_main


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    anytime = [{"model": model, "exit": n, "bleu": 20 + n, "sentences_per_s": 60 - 5 * n}
               for model in ("depth1", "aligned") for n in (1, 2)]
    adaptive = [{"policy": "halting", "search": "beam5", "average_exit": 1.5, "bleu": 21.5, "sentences_per_s": 52}]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"anytime": anytime, "adaptive": adaptive, "batch": 64, "threads": 2, "split": "test"}))
    assert plot_main([str(results), "--output", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_results_file_is_named(tmp_path):
    with pytest.raises(SystemExit, match="cannot read the results file .*missing.json"):
        plot_main([str(tmp_path / "missing.json"), "--output", str(tmp_path / "plot.png")])
    assert not (tmp_path / "plot.png").exists()
