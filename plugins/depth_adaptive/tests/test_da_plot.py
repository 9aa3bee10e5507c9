"""The plot script draws a results file: fixed-depth families as lines, policies as named stars."""

from __future__ import annotations

import json

import pytest

from depth_adaptive.plot import draw, main as plot_main


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    anytime = [{"model": model, "exit": n, "bleu": 20 + n, "sentences_per_s": 60 - 5 * n}
               for model in ("depth1", "aligned") for n in (1, 2)]
    adaptive = [{"model": "halting_mixed", "policy": "halting", "setting": "threshold=0.1345", "search": "beam5",
                 "average_exit": 1.5, "bleu": 21.5, "sentences_per_s": 52},
                {"model": "aligned", "policy": "patience", "setting": "patience=2", "search": "beam5",
                 "average_exit": 3.3, "bleu": 21.0, "sentences_per_s": 40},
                {"model": "aligned", "policy": "entropy", "setting": "thresholds=[0.00, 2.70]", "search": "greedy",
                 "average_exit": 3.3, "bleu": 21.0, "sentences_per_s": 140}]
    results = {"anytime": anytime, "adaptive": adaptive, "batch": 64, "threads": 2, "split": "test"}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert plot_main([str(path), "--output", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot
    _, axes = pyplot.subplots()
    draw(results, axes)
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    # a halting run is named by its model, patience by its p; greedy rows are not drawn
    assert labels == ["baselines (trained at depth n)", "aligned, exit n", "halting_mixed (AE 1.5)", "patience 2 (AE 3.3)"]


def test_a_missing_results_file_is_named(tmp_path):
    with pytest.raises(SystemExit, match="cannot read the results file .*missing.json"):
        plot_main([str(tmp_path / "missing.json"), "--output", str(tmp_path / "plot.png")])
    assert not (tmp_path / "plot.png").exists()


def test_the_frontier_plot_draws_each_tuning_file_and_the_fixed_exits(tmp_path):
    pytest.importorskip("matplotlib")
    from depth_adaptive.plot_frontier import main as frontier_main

    def tuned(bleus):
        samples = [{"threshold": 0.1 * i, "bleu": b, "average_exit": 1 + i} for i, b in enumerate(bleus)]
        return {"samples": samples, "chosen": samples[-1], "full_depth": {"bleu": 30.0, "average_exit": 3.0}}

    (tmp_path / "a.json").write_text(json.dumps(tuned([28.0, 29.9])))
    (tmp_path / "b.json").write_text(json.dumps(tuned([28.5, 29.5, 30.1])))
    rows = [{"model": m, "exit": n, "bleu": 27 + n, "sentences_per_s": 50}
            for m in ("mixed", "depth1") for n in (1, 2, 3)]
    (tmp_path / "valid.json").write_text(json.dumps({"anytime": rows}))
    output = tmp_path / "frontier.png"
    assert frontier_main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--anytime", str(tmp_path / "valid.json"),
                          "--output", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from matplotlib import pyplot
    from depth_adaptive.plot_frontier import draw as draw_frontier
    _, axes = pyplot.subplots()
    draw_frontier({"tuned": {"a": tuned([28.0, 29.9]), "b": tuned([28.5, 29.5, 30.1])},
                   "anytime": [r for r in rows if r["model"] == "mixed"]}, axes)
    labels = [t.get_text() for t in axes.get_legend().get_texts()]
    assert labels == ["a", "b", "fixed exit n", "full depth - 0.3 BLEU"]
    assert [len(line.get_xdata()) for line in axes.get_lines()[:3]] == [2, 3, 3]
    assert axes.get_lines()[3].get_ydata()[0] == pytest.approx(29.7)
    with pytest.raises(SystemExit, match="cannot read .*missing.json"):
        frontier_main([str(tmp_path / "missing.json"), "--output", str(tmp_path / "other.png")])
    assert not (tmp_path / "other.png").exists()
