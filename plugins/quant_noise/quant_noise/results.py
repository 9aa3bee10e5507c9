r"""The quant_noise table: ``python -m quant_noise.results --data DATA --output FILE NAME=DIR ...``

Each ``DIR`` holds a float checkpoint (``checkpoint_avg3.pt``, or ``--float-name``) and its quantized copies
(``plugins/quant_noise/recipes/multi30k_quantize.sh``: ``int8.pt``, ``ipq4.pt``, ``ipq8.pt``,
``ipq8+int8.pt``, ``ipq8e.pt``; a missing one is skipped). The files of one model decode the test split
(beam 5, batch 64) in alternating rounds in one process (``decode_alternately``), so each
speed-up is measured side by side with the float model (``--workers N``: each model decodes in
N forked processes sharing ``--threads``). Per row: sacreBLEU, sentences/s and the
ratio to fp32, file bytes and the ratio to the fp32 file, and the compression of the quantized
layers alone (their float bytes over their stored bytes). JSON goes to ``--output`` (the input
of ``quant_noise.plot``), Markdown to stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from toolkit.checkpoint import load_checkpoint
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.report import add_test_set_arguments, decode_alternately, read_test_set, write_results
from toolkit.generation.translator import Translator
from toolkit.plugins import load_plugins
from toolkit.scoring.bleu import score

from quant_noise.quantize import NAME, tensor_bytes

VARIANTS = {"fp32": "checkpoint_avg3.pt", "int8": "int8.pt", "ipq4": "ipq4.pt", "ipq8": "ipq8.pt",
            "ipq8+int8": "ipq8+int8.pt", "ipq8e": "ipq8e.pt"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="NAME=DIR")
    add_test_set_arguments(parser)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="alternating timed rounds over the split")
    parser.add_argument("--workers", type=int, default=1,
                        help="decoding processes per model, sharing --threads (toolkit.generation.workers)")
    parser.add_argument("--float-name", default=VARIANTS["fp32"], help="the float checkpoint's file name in each DIR")
    parser.add_argument("--output", type=Path, required=True)
    return parser.parse_args(argv)


def quantized_layer_bytes(float_model: torch.nn.Module, model: torch.nn.Module, layout: dict[str, str]) -> tuple[int, int]:
    """Bytes of the layout's modules as float (in ``float_model``) and as stored (in ``model``)."""
    def total(m: torch.nn.Module) -> int:
        return tensor_bytes([t for name in layout for t in m.get_submodule(name).state_dict().values()])
    return total(float_model), total(model)


def stored_layout(path: Path) -> dict[str, str]:
    """The quantized layout a checkpoint's config records (empty for a float one)."""
    options = (load_checkpoint(path)["cfg"].get("plugins") or {}).get("options", {}).get(NAME) or {}
    return dict(options.get("quantized") or {})


def model_rows(name: str, folder: Path, sources: list[str], references: list[str], args: argparse.Namespace) -> list[dict]:
    """Every variant present in ``folder``, decoded side by side with its fp32 checkpoint."""
    plugins = load_plugins()
    names = {**VARIANTS, "fp32": args.float_name}
    files = {variant: folder / file for variant, file in names.items() if (folder / file).exists()}
    if "fp32" not in files:
        raise SystemExit(f"{folder} has no {args.float_name}: the float model every row is compared with")
    translators = {variant: Translator.from_checkpoint(path, GenerationConfig(beam=args.beam), "cpu", plugins,
                                                       max_sentences=args.batch, workers=args.workers)
                   for variant, path in files.items()}
    totals = decode_alternately(translators, sources, args.rounds)
    for translator in translators.values():
        translator.close()
    fp32 = totals["fp32"]["sentences"] / totals["fp32"]["seconds"]
    rows = []
    for variant, path in files.items():
        speed = totals[variant]["sentences"] / totals[variant]["seconds"]
        layout = stored_layout(path)
        float_layers, stored_layers = quantized_layer_bytes(translators["fp32"].model, translators[variant].model, layout)
        rows.append({"model": name, "variant": variant, "bleu": round(score(totals[variant]["outputs"], references).bleu, 2),
                     "sentences_per_s": round(speed, 1), "speedup": round(speed / fp32, 2), "bytes": path.stat().st_size,
                     "file_ratio": round(path.stat().st_size / files["fp32"].stat().st_size, 3),
                     "quantized_modules": len(layout),
                     "layer_compression": round(float_layers / stored_layers, 1) if layout else None})
        print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | variant | BLEU | sentences/s | speed-up | bytes | file ratio | quantized layers |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        layers = f"{r['layer_compression']}x smaller ({r['quantized_modules']} modules)" if r["layer_compression"] else "-"
        lines.append(f"| {r['model']} | {r['variant']} | {r['bleu']:.2f} | {r['sentences_per_s']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['bytes']:,} | {r['file_ratio']:.3f} | {layers} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sources, references = read_test_set(args)
    rows = []
    for item in args.models:
        name, _, folder = item.partition("=")
        rows += model_rows(name, Path(folder), sources, references, args)
    write_results(args.output, args, beam=args.beam, rounds=args.rounds, workers=args.workers, rows=rows)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
