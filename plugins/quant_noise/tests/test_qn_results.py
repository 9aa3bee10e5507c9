"""The results script on the toy run: each quantized file is compared with its fp32 checkpoint
side by side (speed ratio, file ratio, compression of the quantized layers), and the plot
script draws the rows."""

from __future__ import annotations

import json
import shutil

import pytest

from quant_noise.quantize import main as quantize_main
from quant_noise.results import main as results_main


def test_results_rows_and_plot(trained_run, tmp_path, clean_config_store):
    model = tmp_path / "toy"
    model.mkdir()
    shutil.copy(trained_run / "checkpoint_last.pt", model / "checkpoint_avg3.pt")
    assert quantize_main([str(model / "checkpoint_avg3.pt"), str(model / "int8.pt"), "--scheme", "int8"]) == 0
    assert quantize_main([str(model / "checkpoint_avg3.pt"), str(model / "ipq4.pt"), "--scheme", "ipq",
                          "--block-size", "4", "--embedding-block-size", "4", "--centroids", "16"]) == 0
    output = tmp_path / "results.json"
    assert results_main([f"toy={model}", "--data", str(trained_run / "data-bin" / "toy-text"), "--source-lang", "src",
                         "--target-lang", "tgt", "--beam", "2", "--batch", "32", "--rounds", "1",
                         "--output", str(output)]) == 0
    rows = {r["variant"]: r for r in json.loads(output.read_text())["rows"]}
    assert list(rows) == ["fp32", "int8", "ipq4"]  # the missing ipq8 files are skipped
    assert rows["fp32"]["speedup"] == 1.0 and rows["fp32"]["layer_compression"] is None
    assert rows["int8"]["file_ratio"] < 0.3 and 3.5 < rows["int8"]["layer_compression"] < 4.1  # int8 + scales
    assert rows["ipq4"]["layer_compression"] > rows["int8"]["layer_compression"]
    assert all(r["sentences_per_s"] > 0 and r["bleu"] > 0 for r in rows.values())
    pooled = tmp_path / "pooled.json"  # each model in two decoding processes: the same translations
    assert results_main([f"toy={model}", "--data", str(trained_run / "data-bin" / "toy-text"), "--source-lang", "src",
                         "--target-lang", "tgt", "--beam", "2", "--batch", "32", "--rounds", "1", "--workers", "2",
                         "--output", str(pooled)]) == 0
    assert json.loads(pooled.read_text())["workers"] == 2
    assert {r["variant"]: r["bleu"] for r in json.loads(pooled.read_text())["rows"]} == {v: r["bleu"] for v, r in rows.items()}

    pytest.importorskip("matplotlib")
    from quant_noise.plot import main as plot_main

    assert plot_main([str(output), "--output", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
