r"""The LayerDrop table: ``python -m layerdrop.results --data DATA --output FILE NAME=CKPT ...``

Each named checkpoint is pruned with ``spread`` (every other block for half depth) to each
``--depths E+D`` it can reach, written by ``toolkit-prune``'s code into a temporary folder
(so the bytes are those of a real file), loaded back without the plugin, and decodes the test
split (beam 5, batch 64): sacreBLEU, sentences/s, parameters, bytes. A checkpoint given as
``NAME=CKPT@as-is`` is measured only at its own depth (the reference trained at a small depth),
through an inference file (itself, if it is one), so its bytes hold no optimizer state either. The
rows go to a JSON file (the input of ``layerdrop.plot``) and are printed in Markdown.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from toolkit.checkpoint import load_checkpoint
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.report import add_test_set_arguments, decode_alternately, read_test_set, write_results
from toolkit.generation.translator import Translator
from toolkit.plugins import load_plugins
from toolkit.scoring.bleu import score

from layerdrop.prune import main as prune_main
from layerdrop.pruning import spread


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="NAME=CKPT[@as-is]")
    add_test_set_arguments(parser)
    parser.add_argument("--depths", nargs="+", default=["6+6", "4+4", "6+3", "3+6", "3+3", "2+2"])
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--output", type=Path, required=True)
    return parser.parse_args(argv)


def measure(path: Path, sources: list[str], references: list[str], args: argparse.Namespace) -> dict:
    """Decode with the core alone (a pruned file needs no plugin): BLEU, speed, size."""
    translator = Translator.from_checkpoint(path, GenerationConfig(beam=args.beam), "cpu", load_plugins(autoload=False),
                                            max_sentences=args.batch)
    totals = decode_alternately({"run": translator}, sources, rounds=1)["run"]
    model = translator.model
    return {"encoder_layers": len(model.encoder.layers), "decoder_layers": len(model.decoder.layers),
            "bleu": round(score(totals["outputs"], references).bleu, 2),
            "sentences_per_s": round(totals["sentences"] / totals["seconds"], 1),
            "parameters": model.num_parameters(), "bytes": path.stat().st_size}


def rows_for(name: str, spec: str, sources: list[str], references: list[str], args: argparse.Namespace,
             tmp: Path) -> list[dict]:
    path, _, mode = spec.partition("@")
    state = load_checkpoint(path)
    if mode == "as-is" and state.get("inference_only"):  # already an inference file (e.g. pruned)
        return [{"model": name, "pruned": False, **measure(Path(path), sources, references, args)}]
    depth = (state["cfg"]["model"]["encoder_layers"], state["cfg"]["model"]["decoder_layers"])
    # as-is: every block kept, so the bytes are those of its inference file (no optimizer state)
    targets = [f"{depth[0]}+{depth[1]}"] if mode == "as-is" else args.depths
    rows = []
    for target in targets:
        encoder, decoder = (int(n) for n in target.split("+"))
        if encoder > depth[0] or decoder > depth[1]:
            continue
        out = tmp / f"{name}-{target}.pt"
        prune_main([path, str(out), "--encoder-layers-to-keep", spread_list(depth[0], encoder),
                    "--decoder-layers-to-keep", spread_list(depth[1], decoder)])
        rows.append({"model": name, "pruned": mode != "as-is", **measure(out, sources, references, args)})
        print(rows[-1], flush=True)
        out.unlink()
    return rows


def spread_list(depth: int, keep: int) -> str:
    return ",".join(str(i) for i in spread(depth, keep))


def markdown(rows: list[dict]) -> str:
    lines = ["| model | kept encoder+decoder | BLEU | sentences/s | parameters | bytes |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['encoder_layers']}+{r['decoder_layers']}{'' if r['pruned'] else ' (as trained)'} | "
              f"{r['bleu']:.2f} | {r['sentences_per_s']:.1f} | {r['parameters']:,} | {r['bytes']:,} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sources, references = read_test_set(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.models:
            name, _, spec = item.partition("=")
            rows += rows_for(name, spec, sources, references, args, Path(tmp))
    write_results(args.output, args, beam=args.beam, rows=rows)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
