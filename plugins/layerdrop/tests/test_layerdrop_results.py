"""The results script on the toy run: pruned rows shrink in parameters and bytes, and the plot
script draws them."""

from __future__ import annotations

import json

import pytest

from layerdrop.results import main as results_main


def test_results_rows_and_plot(layerdrop_run, tmp_path, clean_config_store):
    checkpoint = layerdrop_run / "checkpoint_last.pt"
    output = tmp_path / "results.json"
    assert results_main([f"ld={checkpoint}", f"ref={checkpoint}@as-is", "--data", str(layerdrop_run / "data-bin" / "toy-text"),
                         "--source-lang", "src", "--target-lang", "tgt", "--depths", "4+4", "2+2", "6+6",
                         "--beam", "2", "--batch", "32", "--output", str(output)]) == 0
    rows = json.loads(output.read_text())["rows"]
    assert [(r["model"], r["encoder_layers"], r["pruned"]) for r in rows] == [
        ("ld", 4, True), ("ld", 2, True), ("ref", 4, False)]  # 6+6 is deeper than the model: left out
    full, half = rows[0], rows[1]
    assert half["parameters"] < full["parameters"] and half["bytes"] < full["bytes"]
    assert all(r["sentences_per_s"] > 0 and r["bleu"] >= 0 for r in rows)

    # an inference file (here a pruned one) is measured as it is, not pruned again
    from layerdrop.prune import main as prune_main

    pruned = tmp_path / "pruned.pt"
    prune_main([str(checkpoint), str(pruned), "--keep", "first:3"])
    assert results_main([f"first3={pruned}@as-is", "--data", str(layerdrop_run / "data-bin" / "toy-text"),
                         "--source-lang", "src", "--target-lang", "tgt", "--beam", "2", "--batch", "32",
                         "--output", str(tmp_path / "pruned.json")]) == 0
    [row] = json.loads((tmp_path / "pruned.json").read_text())["rows"]
    assert (row["encoder_layers"], row["decoder_layers"], row["bytes"]) == (3, 3, pruned.stat().st_size)

    pytest.importorskip("matplotlib")
    from layerdrop.plot import main as plot_main

    assert plot_main([str(output), "--output", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
