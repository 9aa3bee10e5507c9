r"""BLEU against file size from ``quant_noise.results``' file:

    python -m quant_noise.plot RESULTS.json --output plugins/quant_noise/bleu_vs_size.png

One line per trained model (with and without Quant-Noise) through its fp32, int8, iPQ and
ipq+int8 files, each point labelled with its variant; the x axis is the file's bytes on disk
(log scale). Needs matplotlib (``pip install -e plugins/quant_noise[plot]``).
"""

from __future__ import annotations

import sys

from toolkit.plotting import plot_main


def draw(results: dict, axes) -> None:
    """A line per model, points sorted by file size."""
    for name in dict.fromkeys(r["model"] for r in results["rows"]):
        rows = sorted((r for r in results["rows"] if r["model"] == name), key=lambda r: r["bytes"])
        axes.plot([r["bytes"] / 2**20 for r in rows], [r["bleu"] for r in rows], marker="o", label=name)
        for r in rows:
            axes.annotate(r["variant"], (r["bytes"] / 2**20, r["bleu"]), fontsize=7, textcoords="offset points",
                          xytext=(3, 3))
    axes.set_xscale("log")
    axes.set_xlabel("file size (MiB, log scale)")
    axes.set_ylabel(f"sacreBLEU ({results['split']}, beam {results['beam']})")
    axes.set_title("Quantization: quality against file size")
    axes.legend(fontsize=8)


def main(argv: list[str] | None = None) -> int:
    return plot_main(__doc__, draw, argv, needs="-e plugins/quant_noise[plot]")


if __name__ == "__main__":
    sys.exit(main())
