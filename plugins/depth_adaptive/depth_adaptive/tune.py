r"""``toolkit-tune-exits``: search an exit policy's thresholds on the validation set.

    toolkit-tune-exits runs/da/checkpoint_best.pt --policy confidence --samples 40 --output runs/da/confidence.json
    toolkit-generate path=runs/da/checkpoint_best.pt split=test generation/exit_policy=confidence \
        generation.exit_policy.tuned=runs/da/confidence.json

Random search (Elbayad et al.): K threshold settings are drawn (one threshold per block for
``confidence`` and ``entropy``, each block's check switched off with probability 1/3; one
threshold for the geometric ``halting`` classifier), plus a few uniform anchors; each decodes
the validation split. The file holds every sample, the BLEU / cost frontier, full depth, and
the chosen setting: the lowest decoding cost whose BLEU is within ``--max-bleu-drop`` of full
depth. ``--refine N`` (``halting`` only: one threshold) then bisects N times between the chosen
threshold and the nearest cheaper sample that did not qualify, so the choice is not limited to
the thresholds the draw happened to hit. With ``--chance P`` a setting qualifies only when it is
within that drop in at least a fraction P of 1,000 paired bootstrap resamples of the validation
sentences (its ``chance``): one validation BLEU can sit within 0.3 of full depth by luck and a
whole point below it on test.

The cost counts what a token costs in decoder blocks: the blocks it ran (the average exit, AE)
plus its vocabulary projections, each worth rho blocks (rho = V*C / (6C^2 + 2CF), 2.2 for
``transformer_small`` with 8,000 words). Choosing by AE alone, as the paper does, would prefer
policies that read every block's distribution to decide, which on a CPU costs more than it saves.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Callable

import torch

from toolkit.data.preprocess import read_lines
from toolkit.errors import UserError
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.translator import Translator
from toolkit.inference import load_for_inference
from toolkit.precision import add_precision_argument
from toolkit.scoring.bleu import score

from depth_adaptive.significance import chance_within, sentence_statistics
from depth_adaptive.tuning import fingerprint, write_tuned

RANGES = {"confidence": (0.2, 1.0), "entropy": (0.0, 3.0), "halting": (0.05, 0.95)}
ANCHORS = {"confidence": [0.5, 0.7, 0.9, 0.99], "entropy": [0.1, 0.5, 1.0, 2.0], "halting": [0.2, 0.5, 0.8]}
OFF = {"confidence": 2.0, "entropy": 0.0}  # thresholds that switch a block's check off
MEASURES = ("bleu", "average_exit", "projections", "cost", "chance")  # what a sample measured, beside its settings


def draw_settings(policy: str, blocks: int, samples: int, seed: int) -> list[dict]:
    """The anchors (one threshold everywhere), then ``samples`` random settings."""
    low, high = RANGES[policy]
    rng = random.Random(seed)
    if policy == "halting":
        values = ANCHORS[policy] + [rng.uniform(low, high) for _ in range(samples)]
        return [{"threshold": round(v, 4)} for v in values]
    drawn = [[OFF[policy] if rng.random() < 1 / 3 else round(rng.uniform(low, high), 4) for _ in range(blocks - 1)]
             for _ in range(samples)]
    return [{"thresholds": [a] * (blocks - 1)} for a in ANCHORS[policy]] + [{"thresholds": d} for d in drawn]


def frontier(points: list[dict]) -> list[dict]:
    """The points no other beats on both BLEU (higher) and cost (lower), by cost."""
    best, front = -1.0, []
    for point in sorted(points, key=lambda p: (p["cost"], -p["bleu"])):
        if point["bleu"] > best:
            front.append(point)
            best = point["bleu"]
    return front


def qualifies(point: dict, full_bleu: float, max_drop: float, chance: float | None) -> bool:
    """Whether ``point`` may be chosen: the rule of ``choose``."""
    return point["chance"] >= chance if chance is not None else point["bleu"] >= full_bleu - max_drop


def choose(points: list[dict], full_bleu: float, max_drop: float, chance: float | None = None) -> dict:
    """The lowest cost within ``max_drop`` BLEU of full depth (else the best BLEU); with
    ``chance``, within it in at least that fraction of bootstrap resamples (each point's ``chance``)."""
    allowed = [p for p in points if qualifies(p, full_bleu, max_drop, chance)]
    if not allowed:
        return max(points, key=lambda p: p["bleu"])
    return min(allowed, key=lambda p: (p["cost"], -p["bleu"]))


def refine_threshold(points: list[dict], measure: Callable[[dict], dict], passes: Callable[[dict], bool],
                     steps: int) -> list[dict]:
    """Bisect the one threshold of ``halting`` ``steps`` times between the cheapest qualifying
    point and the sample whose threshold is nearest to it among the cheaper ones that do not
    qualify; ``measure`` decodes a setting. Returns the new points (none when no sample qualifies
    or none cheaper fails: there is no boundary to find)."""
    accepted = [p for p in points if passes(p)]
    if not accepted:
        return []
    good = min(accepted, key=lambda p: (p["cost"], -p["bleu"]))
    cheaper = [p for p in points if p["cost"] < good["cost"] and not passes(p)]
    if not cheaper:
        return []
    bad = min(cheaper, key=lambda p: abs(p["threshold"] - good["threshold"]))
    refined = []
    for _ in range(steps):
        middle = round((good["threshold"] + bad["threshold"]) / 2, 4)
        if middle in (good["threshold"], bad["threshold"]):
            break
        point = measure({"threshold": middle})
        refined.append(point)
        if passes(point) and point["cost"] <= good["cost"]:
            good = point
        else:
            bad = point
    return refined


def projection_in_blocks(model) -> float:
    """rho: multiply-adds of one vocabulary projection over those of one incremental decoder
    block (self-attention 4C^2, cross-attention query and output 2C^2, feed-forward 2CF). Read
    from the layers' sizes, not their weights: a quantized Linear (int8) keeps no ``weight``."""
    projection = model.decoder.output_projection
    vocab, dim = projection.out_features, projection.in_features
    ffn = model.decoder.layers[0].ffn.fc1.out_features
    return vocab * dim / (6 * dim * dim + 2 * dim * ffn)


def decode(translator: Translator, sources: list[str], references: list[str]) -> tuple[dict, list[str]]:
    """(BLEU, average exit, projections per token and cost of one setting; its hypotheses)."""
    hypotheses = [t.text for t in translator.translate(sources)]
    generator = translator.generator
    rho = projection_in_blocks(translator.model)
    return {"bleu": round(score(hypotheses, references).bleu, 2),
            "average_exit": round(generator.average_exit(), 3),
            "projections": round(generator.projections_per_token(), 3),
            "cost": round(generator.average_exit() + rho * generator.projections_per_token(), 3)}, hypotheses


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="toolkit-tune-exits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--policy", choices=sorted(RANGES), required=True)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--samples", type=int, default=30, help="random settings besides the anchors")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--refine", type=int, default=0, help="bisection steps after the random search "
                        "(halting only): between the chosen threshold and the nearest cheaper one that failed")
    parser.add_argument("--source", help="validation sources (default: the checkpoint's data, split valid)")
    parser.add_argument("--reference")
    parser.add_argument("--limit", type=int, help="only the first N sentences")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--lenpen", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-bleu-drop", type=float, default=0.3)
    parser.add_argument("--chance", type=float, help="choose only settings within the drop in this "
                        "fraction of paired bootstrap resamples (e.g. 0.9; default: the point estimate)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="auto")
    add_precision_argument(parser)
    return parser.parse_args(argv)


def validation_text(args: argparse.Namespace, task) -> tuple[list[str], list[str], str]:
    if bool(args.source) != bool(args.reference):
        raise UserError("give both --source and --reference, or neither (the checkpoint's valid split)")
    if args.source:
        source, reference = Path(args.source), Path(args.reference)
    else:
        settings = task.settings()
        source = task.data_dir() / f"valid.{settings.source_lang}"
        reference = task.data_dir() / f"valid.{settings.target_lang}"
    sources, references = read_lines(source)[: args.limit], read_lines(reference)[: args.limit]
    if len(sources) != len(references):
        raise UserError(f"{source} has {len(sources)} lines but {reference} has {len(references)}")
    return sources, references, str(source)


def tune(args: argparse.Namespace) -> dict:
    """Decode full depth and every setting; returns the record written to ``args.output``."""
    if args.chance is not None and not 0.0 < args.chance <= 1.0:
        raise UserError(f"--chance must be in (0, 1], got {args.chance}")
    if args.refine < 0:
        raise UserError(f"--refine must be >= 0, got {args.refine}")
    if args.refine and args.policy != "halting":
        raise UserError(f"--refine bisects one threshold: policy halting, not {args.policy}")
    if args.threads:
        torch.set_num_threads(args.threads)
    _, task, model, _ = load_for_inference(args.checkpoint, device=args.device, precision=args.precision)
    sources, references, source = validation_text(args, task)

    def translator(policy: dict | None) -> Translator:
        cfg = GenerationConfig(beam=args.beam, lenpen=args.lenpen, exit_policy=policy)
        return Translator(task, model, cfg, max_sentences=args.batch)

    full, full_hypotheses = decode(translator(None), sources, references)
    full_statistics = sentence_statistics(full_hypotheses, references) if args.chance is not None else None
    print(f"full depth: BLEU {full['bleu']:.2f}, average exit {full['average_exit']:.2f}, cost {full['cost']:.2f} blocks")

    def measure(settings: dict) -> dict:
        measured, hypotheses = decode(translator({"_name": args.policy, **settings}), sources, references)
        point = {**settings, **measured}
        if args.chance is not None:
            point["chance"] = round(chance_within(sentence_statistics(hypotheses, references), full_statistics,
                                                  args.max_bleu_drop), 3)
        print(f"[{len(points) + 1}] {settings}: BLEU {point['bleu']:.2f}, average exit {point['average_exit']:.2f}, "
              f"cost {point['cost']:.2f} blocks" + (f", chance {point['chance']:.3f}" if "chance" in point else ""),
              flush=True)
        points.append(point)
        return point

    points: list[dict] = []
    for settings in draw_settings(args.policy, len(model.decoder.layers), args.samples, args.seed):
        measure(settings)
    refine_threshold(points, measure, lambda p: qualifies(p, full["bleu"], args.max_bleu_drop, args.chance),
                     args.refine)
    chosen = choose(points, full["bleu"], args.max_bleu_drop, args.chance)
    rule = f"lowest cost (blocks + rho x projections) within {args.max_bleu_drop} BLEU of full depth"
    if args.chance is not None:
        rule += f" in {args.chance:.0%} of paired bootstrap resamples"
    record = {"policy": args.policy, "checkpoint": str(args.checkpoint), "model": fingerprint(model),
              "settings": {k: v for k, v in chosen.items() if k not in MEASURES},
              "chosen": chosen, "full_depth": full, "rule": rule,
              "data": {"source": source, "sentences": len(sources), "beam": args.beam},
              "precision": args.precision, "frontier": frontier(points), "samples": points}
    write_tuned(args.output, record)
    print(f"chosen {record['settings']}: BLEU {chosen['bleu']:.2f} (full depth {full['bleu']:.2f}), average exit "
          f"{chosen['average_exit']:.2f} of {len(model.decoder.layers)}, cost {chosen['cost']:.2f} blocks (full depth "
          f"{full['cost']:.2f}); written to {args.output}")
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        tune(args)
    except UserError as error:
        print(f"toolkit-tune-exits: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
