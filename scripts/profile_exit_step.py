r"""Where a beam-search decoding step spends its time, and what early exits can save.

    python scripts/profile_exit_step.py --threads 2 [--arch transformer_small --decoder-layers 6
        --vocab 8000 --rows 320 --source-length 16 --steps 20 --rounds 3 --search chunks]

A model of the architecture with random weights (speed does not depend on them) decodes
``--steps`` positions for ``--rows`` hypotheses (beam 5 x batch 64 = 320), each step followed by
a beam-style reorder of the caches and the search's log-softmax and top-k over the vocabulary.
It times, alternating over ``--rounds`` rounds in one process:

- a full-depth step (``decoder(..., state=)``) and steps in which every row exits after block
  k (``decode_step_with_exits`` with ``fixed_depth``), for every k: the speed-up an exit
  policy with average exit k could reach at best; and steps in which each row exits after a
  block drawn at random, uniformly or with the odds ``--exit-weights`` (a trained policy's
  exit histogram: blocks then run part of the rows, as under a real policy);
- the parts of the full-depth step, timed inside the same loop: the decoder blocks (their cache
  writes and beam reorders included), the output projection, the search's log-softmax + top-k.

The parts give Amdahl's bound: the projection and the search are paid once per token whatever
the exit, so a step can be at most (blocks + fixed) / (k x block + fixed) faster.
``--search topk`` takes the candidates with one top-k over all K x V sums (fairseq's way, this
search's before ``best_continuations``) to show what the chunked candidates changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Callable

import torch

from toolkit.data.dictionary import Dictionary
from toolkit.generation.exit_policy import ExitPolicy, FixedDepth, FixedDepthConfig, decode_step_with_exits
from toolkit.generation.search import all_continuations_topk, best_continuations
from toolkit.models import architectures
from toolkit.models.transformer import TransformerModel


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="transformer_small")
    parser.add_argument("--decoder-layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--rows", type=int, default=320, help="hypotheses: beam x sentences")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--source-length", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--exit-weights", type=lambda text: [float(w) for w in text.split(",")],
                        help="the random exits' odds of each block, e.g. 49,41,9,1,0,0 (default: equal)")
    parser.add_argument("--search", choices=("chunks", "topk"), default="chunks",
                        help="the candidates: best_continuations (the generator's) or a full top-k")
    args = parser.parse_args()
    if args.exit_weights is not None and (len(args.exit_weights) != args.decoder_layers or sum(args.exit_weights) <= 0):
        parser.error(f"--exit-weights needs {args.decoder_layers} non-negative odds, not all zero")
    if args.rows % args.beam:
        parser.error(f"--rows {args.rows} is not a whole number of beams of {args.beam}")
    return args


def build(args: argparse.Namespace) -> TransformerModel:
    words = Dictionary(["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(args.vocab - 4)])
    cfg = dataclasses.replace(getattr(architectures, args.arch)(), decoder_layers=args.decoder_layers, dropout=0.0)
    return TransformerModel.from_config(cfg, words, words).eval()


class RandomExits(ExitPolicy):
    """Each row exits after a block drawn from 1..blocks at every step, with the odds
    ``weights`` (blocks,): the mixed batches of a real policy, where blocks run part of the rows."""

    def __init__(self, weights: torch.Tensor, seed: int = 0):
        self.weights, self.generator, self.exit_at = weights, torch.Generator().manual_seed(seed), None

    @property
    def average(self) -> float:
        return float((self.weights * torch.arange(1, len(self.weights) + 1)).sum() / self.weights.sum())

    def begin_step(self, step) -> None:
        rows = step.tokens.size(0)
        self.exit_at = 1 + torch.multinomial(self.weights, rows, replacement=True, generator=self.generator)

    def should_exit(self, block: int, hidden: torch.Tensor, decoder) -> torch.Tensor:
        exits = self.exit_at == block + 1  # rows arrive in order, those that left removed
        self.exit_at = self.exit_at[~exits]
        return exits


def search_step(logits: torch.Tensor, beam: int, search: str) -> torch.Tensor:
    """The search's share of a step: log-softmax, top-2k per sentence; returns the new order."""
    lprobs = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    sentences = lprobs.size(0) // beam
    scores = torch.zeros(sentences, beam)
    candidates = all_continuations_topk if search == "topk" else best_continuations
    _, _, beams = candidates(lprobs.view(sentences, beam, -1), scores, 2 * beam)  # (N / beam, 2k)
    rows = beams[:, :beam] + torch.arange(0, lprobs.size(0), beam)[:, None]
    return rows.view(-1)


def time_decoding(model: TransformerModel, args: argparse.Namespace, step: Callable,
                  parts: dict[str, float]) -> float:
    """Seconds per step of decoding ``args.steps`` positions with ``step(tokens, encoder_out, state)``;
    the search's seconds per step are added to ``parts``."""
    generator = torch.Generator().manual_seed(0)
    # as in the generator, a sentence's beam shares its encoder row
    src = torch.randint(4, args.vocab, (args.rows // args.beam, args.source_length), generator=generator)
    encoder_out = model.encoder(src, None)
    state, tokens = model.decoder.new_state(rows_per_source=args.beam), torch.zeros(args.rows, 1, dtype=torch.long)
    start = time.perf_counter()
    for _ in range(args.steps):
        logits = step(tokens, encoder_out, state)
        searched = time.perf_counter()
        state.reorder(search_step(logits, args.beam, args.search))
        parts["search (log-softmax, top-k)"] += time.perf_counter() - searched
        tokens = logits.argmax(-1, keepdim=True)
    return (time.perf_counter() - start) / args.steps


def timed_full_step(decoder, parts: dict[str, float]) -> Callable:
    """A full-depth step (``decoder.forward`` with a state) that adds the seconds of its blocks
    and of its output projection to ``parts``."""
    def step(tokens: torch.Tensor, encoder_out, state) -> torch.Tensor:
        start = time.perf_counter()
        x = decoder.embedding(tokens, state.length)  # (N, 1, C)
        for i, layer in enumerate(decoder.layers):
            x = layer(x, encoder_out.states, encoder_out.padding_mask, state.self_attn[i], state.cross_attn[i])
        state.length += 1
        projected = time.perf_counter()
        logits = decoder.project(x[:, 0])  # (N, V)
        parts["decoder blocks"] += projected - start
        parts["output projection"] += time.perf_counter() - projected
        return logits
    return step


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args)
    decoder, blocks = model.decoder, args.decoder_layers
    parts = {"decoder blocks": 0.0, "output projection": 0.0, "search (log-softmax, top-k)": 0.0}
    steps = {"full depth": timed_full_step(decoder, parts)}
    for k in range(1, blocks + 1):
        policy = FixedDepth(FixedDepthConfig(block=k), model)
        steps[f"exit after {k}"] = lambda t, e, s, p=policy: decode_step_with_exits(decoder, t, e, s, p)[0]
    random_exits = RandomExits(torch.tensor(args.exit_weights or [1.0] * blocks))
    steps["random exits"] = lambda t, e, s, p=random_exits: decode_step_with_exits(decoder, t, e, s, p)[0]
    seconds = dict.fromkeys(steps, 0.0)
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, step in steps.items():
                search_before = parts["search (log-softmax, top-k)"]
                seconds[name] += time_decoding(model, args, step, parts) / args.rounds
                if name != "full depth":  # the search is timed on full-depth steps only
                    parts["search (log-softmax, top-k)"] = search_before
    report(seconds, {name: value / (args.rounds * args.steps) for name, value in parts.items()}, blocks,
           random_exits.average, args)


def report(seconds: dict[str, float], parts: dict[str, float], blocks: int, average: float,
           args: argparse.Namespace) -> None:
    full = seconds["full depth"]
    block, fixed = parts["decoder blocks"] / blocks, parts["output projection"] + parts["search (log-softmax, top-k)"]
    print(f"{args.arch}, {blocks} decoder blocks, vocabulary {args.vocab}, {args.rows} rows, source length "
          f"{args.source_length}, {args.steps} steps, {torch.get_num_threads()} threads, {args.rounds} rounds, "
          f"{args.search} search\n")
    print("| part of a full-depth step | ms | share |\n|---|---|---|")
    for name, value in parts.items():
        print(f"| {name} | {value * 1e3:.2f} | {value / full:.1%} |")
    print(f"| whole step | {full * 1e3:.2f} | 100% |\n")
    print("| step | ms | speed-up over full depth | Amdahl bound from the parts |\n|---|---|---|---|")
    print(f"| full depth | {full * 1e3:.2f} | 1.00x | 1.00x |")
    for k in range(1, blocks + 1):
        step = seconds[f"exit after {k}"]
        bound = (blocks * block + fixed) / (k * block + fixed)
        print(f"| every row exits after block {k} | {step * 1e3:.2f} | {full / step:.2f}x | {bound:.2f}x |")
    bound = (blocks * block + fixed) / (average * block + fixed)
    print(f"| each row exits after a random block (average {average:.2f}) | {seconds['random exits'] * 1e3:.2f} | "
          f"{full / seconds['random exits']:.2f}x | {bound:.2f}x |")


if __name__ == "__main__":
    main()
