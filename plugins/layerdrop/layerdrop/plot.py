r"""BLEU against kept depth from ``layerdrop.results``' file:

    python -m layerdrop.plot RESULTS.json --output plugins/layerdrop/bleu_vs_depth.png

One line per model pruned every other block (the x axis counts kept encoder + decoder blocks),
the models measured as trained as single points. Needs matplotlib (``pip install -e
plugins/layerdrop[plot]``).
"""

from __future__ import annotations

import sys
from itertools import cycle

from toolkit.plotting import plot_main


def draw(results: dict, axes) -> None:
    """One line per model pruned every other block, the models as trained as single points."""
    names = sorted({r["model"] for r in results["rows"] if r["pruned"]})
    for name in names:
        rows = sorted((r for r in results["rows"] if r["model"] == name and r["pruned"]
                       and r["encoder_layers"] == r["decoder_layers"]), key=lambda r: r["encoder_layers"])
        axes.plot([2 * r["encoder_layers"] for r in rows], [r["bleu"] for r in rows], marker="o", label=name)
    references = (r for r in results["rows"] if not r["pruned"])
    for r, marker in zip(references, cycle("*PXD^v")):  # one marker per reference
        blocks = r["encoder_layers"] + r["decoder_layers"]
        axes.scatter([blocks], [r["bleu"]], marker=marker, s=120, zorder=3, color="black",
                     label=f"{r['model']} (trained at this depth)")
    axes.set_xlabel("kept blocks, encoder + decoder (every other block)")
    axes.set_ylabel(f"sacreBLEU ({results['split']}, beam {results['beam']})")
    axes.set_title("LayerDrop: one model pruned to any depth")
    axes.legend(fontsize=8)


def main(argv: list[str] | None = None) -> int:
    return plot_main(__doc__, draw, argv, needs="-e plugins/layerdrop[plot]")


if __name__ == "__main__":
    sys.exit(main())
