r"""BLEU against decoding speed from ``depth_adaptive.results``' file:

    python -m depth_adaptive.plot RUNS/results.json --output plugins/depth_adaptive/bleu_vs_speed.png

One line per family of fixed-depth models (the baselines trained at each depth; the aligned and
mixed models cut at each exit) and one star per adaptive policy (named in the legend), all
with beam 5, at the speeds measured in the same quiet process. Needs matplotlib
(``pip install -e plugins/depth_adaptive[plot]``).
"""

from __future__ import annotations

import sys

from toolkit.plotting import plot_main

FAMILIES = {"baselines (trained at depth n)": lambda r: r["model"].startswith("depth"),
            "aligned, exit n": lambda r: r["model"] == "aligned",
            "aligned (block weights 6..1), exit n": lambda r: r["model"] == "aligned_low",
            "mixed, exit n": lambda r: r["model"] == "mixed"}


def draw(results: dict, axes) -> None:
    """The fixed-depth families as lines, the adaptive policies (beam 5) as stars."""
    for label, belongs in FAMILIES.items():
        rows = sorted((r for r in results["anytime"] if belongs(r)), key=lambda r: r["sentences_per_s"])
        if rows:
            axes.plot([r["sentences_per_s"] for r in rows], [r["bleu"] for r in rows], marker="o", label=label)
            for r in rows:
                axes.annotate(str(r["exit"]), (r["sentences_per_s"], r["bleu"]), fontsize=7,
                              textcoords="offset points", xytext=(3, 3))
    for r in (r for r in results["adaptive"] if r["search"] == "beam5"):
        name = r["model"] if r["policy"] == "halting" else r["policy"]  # halting runs: halting, halting_mixed
        # patience's p is short enough to name; thresholds are in the README's table
        setting = f" {r['setting'].split('=', 1)[1]}" if r["policy"] == "patience" else ""
        axes.scatter([r["sentences_per_s"]], [r["bleu"]], marker="*", s=110, zorder=3,
                     label=f"{name}{setting} (AE {r['average_exit']:.1f})")
    axes.set_xlabel(f"sentences/s (beam 5, batch {results['batch']}, {results['threads']} threads)")
    axes.set_ylabel(f"sacreBLEU ({results['split']})")
    axes.set_title("Depth-adaptive decoding: quality against speed")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plot: points stay visible


def main(argv: list[str] | None = None) -> int:
    return plot_main(__doc__, draw, argv, needs="-e plugins/depth_adaptive[plot]")


if __name__ == "__main__":
    sys.exit(main())
