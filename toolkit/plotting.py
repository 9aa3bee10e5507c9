"""Figures of results tables, shared by the plugins' plot scripts (matplotlib is optional).

A plot module defines ``plot(results, axes)`` and its ``main`` is
``plot_main(__doc__, plot, argv, needs=...)``: the command reads a results JSON file (or several
tables of the same split, their ``rows`` drawn together) and writes a PNG atomically
(``--output``), with a clear message when matplotlib is missing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from toolkit.files import atomic_write_with


def pyplot(needs: str) -> Any:
    """``matplotlib.pyplot`` on the non-interactive backend, or exit saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(f"plotting needs matplotlib: pip install {needs}") from None
    return plt


def read_results(path: Path) -> dict:
    """A results JSON file, or exit naming the file and what is wrong with it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"cannot read the results file {path}: {error}") from None


def combine(tables: Sequence[dict], names: Sequence[Path]) -> dict:
    """One results table from several: the first's settings, every table's ``rows`` in order.
    Tables without rows, or measured on another split or beam, cannot be drawn together."""
    first = tables[0]
    for table, name in zip(tables, names):
        if not isinstance(table.get("rows"), list):
            raise SystemExit(f"{name} has no rows: only tables of rows can be drawn together")
        for key in ("split", "beam"):
            if table.get(key) != first.get(key):
                raise SystemExit(f"{name} has {key} {table.get(key)!r}, {names[0]} {first.get(key)!r}: "
                                 f"tables drawn together must share it")
    return {**first, "rows": [row for table in tables for row in table["rows"]]}


def write_plot(results: dict, draw: Callable[[dict, Any], None], output: Path, needs: str,
               size: tuple[float, float] = (7, 4.5)) -> None:
    """One figure with one axes, drawn by ``draw(results, axes)``, saved as PNG to ``output``."""
    plt = pyplot(needs)
    figure, axes = plt.subplots(figsize=size)
    draw(results, axes)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write_with(output, lambda f: figure.savefig(f, format="png", dpi=120))
    plt.close(figure)


def plot_main(doc: str | None, draw: Callable[[dict, Any], None], argv: Sequence[str] | None, needs: str) -> int:
    """The command line of a plot module: ``RESULTS.json [MORE.json ...] --output FILE.png``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    tables = [read_results(path) for path in args.results]
    write_plot(tables[0] if len(tables) == 1 else combine(tables, args.results), draw, args.output, needs)
    print(f"written {args.output}")
    return 0
