r"""BLEU against decoding speed from ``depth_adaptive.results``' file:

    python -m depth_adaptive.plot RUNS/results.json --output plugins/depth_adaptive/bleu_vs_speed.png

One line per family of fixed-depth models (the baselines trained at each depth; the aligned and
mixed models cut at each exit) and one point per adaptive policy, all with beam 5, at the
speeds measured in the same quiet process. Needs matplotlib
(``pip install -e plugins/depth_adaptive[plot]``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toolkit.files import atomic_write_with

FAMILIES = {"baselines (trained at depth n)": lambda r: r["model"].startswith("depth"),
            "aligned, exit n": lambda r: r["model"] == "aligned", "mixed, exit n": lambda r: r["model"] == "mixed"}


def plot(results: dict, output: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("depth_adaptive.plot needs matplotlib: pip install -e plugins/depth_adaptive[plot]") from None
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, belongs in FAMILIES.items():
        rows = sorted((r for r in results["anytime"] if belongs(r)), key=lambda r: r["sentences_per_s"])
        if rows:
            axes.plot([r["sentences_per_s"] for r in rows], [r["bleu"] for r in rows], marker="o", label=label)
            for r in rows:
                axes.annotate(str(r["exit"]), (r["sentences_per_s"], r["bleu"]), fontsize=7,
                              textcoords="offset points", xytext=(3, 3))
    for r in (r for r in results["adaptive"] if r["search"] == "beam5"):
        speed = r["sentences_per_s"]
        axes.scatter([speed], [r["bleu"]], marker="*", s=90, zorder=3)
        axes.annotate(f"{r['policy']} (AE {r['average_exit']:.1f})", (speed, r["bleu"]), fontsize=7,
                      textcoords="offset points", xytext=(4, -9))
    axes.set_xlabel(f"sentences/s (beam 5, batch {results['batch']}, {results['threads']} threads)")
    axes.set_ylabel(f"sacreBLEU ({results['split']})")
    axes.set_title("Depth-adaptive decoding: quality against speed")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
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
