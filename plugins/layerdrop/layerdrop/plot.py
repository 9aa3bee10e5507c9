r"""BLEU against kept depth from ``layerdrop.results``' file:

    python -m layerdrop.plot RESULTS.json --output plugins/layerdrop/bleu_vs_depth.png

One line per model pruned every other block (the x axis counts kept encoder + decoder blocks),
the models measured as trained as single points. Needs matplotlib (``pip install -e
plugins/layerdrop[plot]``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toolkit.files import atomic_write_with


def plot(results: dict, output: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("layerdrop.plot needs matplotlib: pip install -e plugins/layerdrop[plot]") from None
    figure, axes = plt.subplots(figsize=(6.5, 4.2))
    names = sorted({r["model"] for r in results["rows"] if r["pruned"]})
    for name in names:
        rows = sorted((r for r in results["rows"] if r["model"] == name and r["pruned"]
                       and r["encoder_layers"] == r["decoder_layers"]), key=lambda r: r["encoder_layers"])
        axes.plot([2 * r["encoder_layers"] for r in rows], [r["bleu"] for r in rows], marker="o", label=name)
    for r in (r for r in results["rows"] if not r["pruned"]):
        blocks = r["encoder_layers"] + r["decoder_layers"]
        axes.scatter([blocks], [r["bleu"]], marker="*", s=120, zorder=3, label=f"{r['model']} (trained at this depth)")
    axes.set_xlabel("kept blocks, encoder + decoder (every other block)")
    axes.set_ylabel(f"sacreBLEU ({results['split']}, beam {results['beam']})")
    axes.set_title("LayerDrop: one model pruned to any depth")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    atomic_write_with(output, lambda f: figure.savefig(f, format="png", dpi=120))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    plot(json.loads(args.results.read_text()), args.output)
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
