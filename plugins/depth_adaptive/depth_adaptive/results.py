r"""The depth-adaptive tables on a test set: ``python -m depth_adaptive.results RUNS --data DATA``.

RUNS holds the models of ``recipes/multi30k_train.sh`` (``depth1`` .. ``depth6`` baselines,
``aligned``, ``aligned_low``, ``mixed``, their ``*_distill`` variants, ``halting``, each with
``checkpoint_last.pt``) and the thresholds tuned on the validation set (``RUNS/tuned/{confidence,entropy}.json``, and
``RUNS/tuned/RUN.json`` for each halting run, from
``toolkit-tune-exits``). It measures, on the test split:

* the anytime table: each baseline at its depth, and the aligned and mixed models cut to n
  blocks for n = 1..N (the model a user would ship at that depth): BLEU and sentences/s;
* the adaptive table: each exit policy against the same model at full depth, decoded in
  alternating rounds in this one process (beam 5 and greedy, batch 64): BLEU, average exit,
  exit histogram, sentences/s of both and the speed-up.

It writes everything to ``RUNS/results.json`` (the input of ``depth_adaptive.plot``) and prints
the two tables in Markdown.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from torch import nn

from toolkit.generation.generator import GenerationConfig
from toolkit.generation.report import add_test_set_arguments, decode_alternately, read_test_set, write_results
from toolkit.generation.translator import Translator
from toolkit.inference import load_for_inference
from toolkit.precision import add_precision_argument
from toolkit.scoring.bleu import score

BASELINES = [f"depth{n}" for n in range(1, 7)]
MULTI_EXIT = ["aligned", "aligned_low", "mixed", "aligned_low_distill", "mixed_distill"]
SEARCHES = {"beam5": 5, "greedy": 1}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path)
    add_test_set_arguments(parser)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the adaptive comparison")
    parser.add_argument("--patience", type=int, nargs="*", default=[1, 2], help="PABEE settings to measure")
    parser.add_argument("--aligned", default="aligned",
                        help="the multi-exit run the confidence, entropy and patience rows decode (choose on valid)")
    add_precision_argument(parser)
    parser.add_argument("--output", type=Path, help="default RUNS/results.json")
    return parser.parse_args(argv)


def load(path: Path, precision: str) -> tuple:
    _, task, model, _ = load_for_inference(path, device="cpu", precision=precision)
    return task, model


def truncated(model: nn.Module, blocks: int) -> nn.Module:
    """The model with only its lowest ``blocks`` decoder blocks, sharing the weights; ``model``
    itself is left whole (a shallow copy of a module shares its dict of submodules, so each
    copy gets its own)."""
    decoder = copy.copy(model.decoder)
    decoder._modules = dict(model.decoder._modules)
    decoder.layers = nn.ModuleList(model.decoder.layers[:blocks])
    decoder.exit_heads = None
    if model.decoder.exit_heads is not None and blocks < len(model.decoder.layers):
        exit_head = model.decoder.exit_heads[blocks - 1]  # block n's own classifier becomes the output layer
        decoder.project = lambda hidden, block=None: exit_head(hidden)
    cut = copy.copy(model)
    cut._modules = dict(model._modules)
    cut.decoder = decoder
    return cut


def measure(translator: Translator, sources: list[str], references: list[str]) -> dict:
    """BLEU and speed of one timed decoding pass (after a warm-up batch)."""
    totals = decode_alternately({"run": translator}, sources, rounds=1)["run"]
    return {"bleu": round(score(totals["outputs"], references).bleu, 2),
            "sentences_per_s": round(totals["sentences"] / totals["seconds"], 1)}


def anytime_rows(runs: Path, sources: list[str], references: list[str], args: argparse.Namespace) -> list[dict]:
    rows = []
    for name in BASELINES + MULTI_EXIT:
        path = runs / name / "checkpoint_last.pt"
        if not path.is_file():
            continue
        task, model = load(path, args.precision)
        depth = len(model.decoder.layers)
        for blocks in range(1, depth + 1) if name in MULTI_EXIT else [depth]:
            translator = Translator(task, truncated(model, blocks), GenerationConfig(beam=5), max_sentences=args.batch)
            row = {"model": name, "exit": blocks, **measure(translator, sources, references)}
            rows.append(row)
            print(f"anytime {row}", flush=True)
    return rows


def policies(runs: Path, aligned: str, patience: list[int]) -> list[tuple[str, dict]]:
    """(model run, exit policy) pairs to compare with full depth, for the runs and tuned files
    that exist."""
    chosen = [(aligned, {"_name": "patience", "patience": p}) for p in patience
              if (runs / aligned / "checkpoint_last.pt").is_file()]
    candidates = [("confidence", aligned, "confidence"), ("entropy", aligned, "entropy")]
    # each halting run (halting, halting_mixed, ...) with its own tuned file
    candidates += [("halting", path.name, path.name) for path in sorted(runs.glob("halting*"))]
    for policy, run, tuned_name in candidates:
        tuned = runs / "tuned" / f"{tuned_name}.json"
        if tuned.is_file() and (runs / run / "checkpoint_last.pt").is_file():
            chosen.append((run, {"_name": policy, "tuned": str(tuned)}))
    return chosen


def adaptive_rows(runs: Path, sources: list[str], references: list[str], args: argparse.Namespace) -> list[dict]:
    rows = []
    for run, policy in policies(runs, args.aligned, args.patience):
        task, model = load(runs / run / "checkpoint_last.pt", args.precision)
        for search, beam in SEARCHES.items():
            full = Translator(task, model, GenerationConfig(beam=beam), max_sentences=args.batch)
            exiting = Translator(task, model, GenerationConfig(beam=beam, exit_policy=policy),
                                 max_sentences=args.batch)
            totals = decode_alternately({"full": full, "exit": exiting}, sources, args.rounds)
            speed = {name: t["sentences"] / t["seconds"] for name, t in totals.items()}
            generator = exiting.generator
            row = {"model": run, "policy": policy["_name"], "setting": describe_setting(policy, generator),
                   "search": search, "bleu": round(score(totals["exit"]["outputs"], references).bleu, 2),
                   "full_bleu": round(score(totals["full"]["outputs"], references).bleu, 2),
                   "average_exit": round(generator.average_exit(), 2),
                   "projections": round(generator.projections_per_token(), 2),
                   "histogram": [round(share, 3) for share in generator.exit_histogram()],
                   "sentences_per_s": round(speed["exit"], 1), "full_sentences_per_s": round(speed["full"], 1),
                   "speedup": round(totals["full"]["seconds"] / totals["exit"]["seconds"], 2)}
            rows.append(row)
            print(f"adaptive {row}", flush=True)
    return rows


def describe_setting(policy: dict, generator) -> str:
    """The policy's effective settings (thresholds read from a tuned file, or patience)."""
    exit_policy = generator.exit_policy
    for attribute in ("thresholds", "threshold", "patience"):
        value = getattr(exit_policy, attribute, None)
        if value is not None:
            if isinstance(value, (list, tuple)):
                value = "[" + ", ".join(f"{v:.2f}" for v in value) + "]"
            return f"{attribute}={value}"
    return ", ".join(f"{k}={v}" for k, v in policy.items() if k != "_name")


def markdown(results: dict) -> str:
    lines = ["| model | exit | BLEU | sentences/s |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['exit']} | {r['bleu']:.2f} | {r['sentences_per_s']:.1f} |"
              for r in results["anytime"]]
    lines += ["", "| model | policy | setting | search | BLEU | full-depth BLEU | AE | projections/token | "
              "sentences/s | full depth sentences/s | speed-up |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['policy']} | {r['setting']} | {r['search']} | {r['bleu']:.2f} | "
              f"{r['full_bleu']:.2f} | {r['average_exit']:.2f} | {r['projections']:.2f} | {r['sentences_per_s']:.1f} | "
              f"{r['full_sentences_per_s']:.1f} | {r['speedup']:.2f}x |" for r in results["adaptive"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sources, references = read_test_set(args)
    results = {"sentences": len(sources), "anytime": anytime_rows(args.runs, sources, references, args),
               "adaptive": adaptive_rows(args.runs, sources, references, args)}
    output = args.output or args.runs / "results.json"
    write_results(output, args, precision=args.precision, **results)
    print(markdown(results))
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
