r"""Validation BLEU against average exit: what each tuned policy traded, beside the fixed exits.

    python -m depth_adaptive.plot_frontier RUNS/tuned/halting_mixed.json RUNS/tuned/halting_mixed@lam03.json \
        --anytime RUNS/results_valid.json --output plugins/depth_adaptive/frontier.png

One line per ``toolkit-tune-exits`` file (every sample it decoded, by average exit; the chosen
one circled), the same model cut at each fixed exit from a ``depth_adaptive.results`` file of
the same split (``--anytime``, optional), and a dashed line 0.3 BLEU (the tuner's
``--max-bleu-drop``) below full depth. Average exit, not speed: the samples were decoded one
after another while tuning, not side by side. Needs matplotlib
(``pip install -e plugins/depth_adaptive[plot]``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from toolkit.plotting import read_results, write_plot

NEEDS = "-e plugins/depth_adaptive[plot]"


def draw(results: dict, axes: Any) -> None:
    """``results``: {"tuned": {label: tuning record}, "anytime": [rows of one model] or []}."""
    full = None
    for label, record in results["tuned"].items():
        samples = sorted(record["samples"], key=lambda p: p["average_exit"])
        line, = axes.plot([p["average_exit"] for p in samples], [p["bleu"] for p in samples], marker=".", label=label)
        chosen = record["chosen"]
        axes.scatter([chosen["average_exit"]], [chosen["bleu"]], s=90, facecolors="none", edgecolors=line.get_color())
        full = record["full_depth"]["bleu"]
    if results["anytime"]:
        rows = sorted(results["anytime"], key=lambda r: r["exit"])
        axes.plot([r["exit"] for r in rows], [r["bleu"] for r in rows], marker="s", color="black", label="fixed exit n")
    if full is not None:
        axes.axhline(full - 0.3, linestyle="--", color="grey", linewidth=1, label="full depth - 0.3 BLEU")
    axes.set_xlabel("average exit (decoder blocks run per token)")
    axes.set_ylabel("sacreBLEU (tuning split)")
    axes.set_title("Exit policies tuned on validation: quality against depth")
    axes.legend(fontsize=7, loc="lower right")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tuned", nargs="+", type=Path, help="toolkit-tune-exits files")
    parser.add_argument("--anytime", type=Path, help="a depth_adaptive.results file of the same split")
    parser.add_argument("--model", default="mixed", help="the anytime rows' model (default mixed)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    tuned = {path.stem: read_results(path) for path in args.tuned}
    anytime = [r for r in read_results(args.anytime)["anytime"] if r["model"] == args.model] if args.anytime else []
    write_plot({"tuned": tuned, "anytime": anytime}, draw, args.output, NEEDS)
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
