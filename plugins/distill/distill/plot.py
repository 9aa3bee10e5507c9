r"""BLEU against decoding speed from ``distill.results``' file:

    python -m distill.plot RESULTS.json --output plugins/distill/bleu_vs_speed.png

One point per model and search (the teacher with beam 5; every student with beam 5 and
greedy, joined by a line), the x axis sentences/s at batch 64 on a log scale. Needs matplotlib
(``pip install -e plugins/distill[plot]``).
"""

from __future__ import annotations

import sys

from toolkit.plotting import plot_main


def draw(results: dict, axes) -> None:
    """A line per model through its searches."""
    for name in dict.fromkeys(r["model"] for r in results["rows"]):
        rows = sorted((r for r in results["rows"] if r["model"] == name), key=lambda r: r["sentences_per_s"])
        axes.plot([r["sentences_per_s"] for r in rows], [r["bleu"] for r in rows], marker="o", label=name)
        for r in rows:
            axes.annotate(r["search"], (r["sentences_per_s"], r["bleu"]), fontsize=7, textcoords="offset points",
                          xytext=(3, 3))
    axes.set_xscale("log")
    axes.set_xlabel(f"sentences/s (batch {results['batch']}, {results['threads']} threads, log scale)")
    axes.set_ylabel(f"sacreBLEU ({results['split']})")
    axes.set_title("Knowledge distillation: students against their teacher")
    axes.legend(fontsize=8)


def main(argv: list[str] | None = None) -> int:
    return plot_main(__doc__, draw, argv, needs="-e plugins/distill[plot]")


if __name__ == "__main__":
    sys.exit(main())
