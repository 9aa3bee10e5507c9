r"""toolkit-prune: keep chosen blocks of a trained model and write a smaller checkpoint.

    toolkit-prune CKPT OUT --encoder-layers-to-keep 0,2,4 --decoder-layers-to-keep 0,2,4
    toolkit-prune CKPT OUT --keep every-other          # or first:K, spread:K, greedy:K

The output is an inference checkpoint (``toolkit.checkpoint.save_inference_checkpoint``): the
kept blocks renumbered, the config recording the new depth, so ``toolkit-generate``,
``Translator.from_checkpoint`` and the exporters load it as it is, without this plugin. It
records what it was pruned from (``pruned_from``). The file is written atomically: an
interrupted run leaves none.

Strategies (both sides, unless a side's indices are given): ``every-other`` (0, 2, 4, ...),
``spread:K`` (K blocks evenly spread), ``first:K`` (the lowest K), ``greedy:K`` (remove one
block at a time, the one whose removal raises the teacher-forced loss on validation text the
least: ``--valid-source/--valid-target``, by default the checkpoint's data folder's valid split).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from torch import nn

from toolkit.checkpoint import load_checked, save_inference_checkpoint
from toolkit.data.preprocess import read_lines
from toolkit.errors import ConfigError
from toolkit.files import check_output_path
from toolkit.inference import load_for_inference
from toolkit.plugins import get_plugins

from layerdrop.options import SIDES
from layerdrop.pruning import check_count, check_indices, first, greedy, prune_model, record_depth, spread
from layerdrop.valid_loss import make_batches, token_nll

logger = logging.getLogger("toolkit-prune")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="toolkit-prune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path)
    for side in SIDES:
        parser.add_argument(f"--{side}-layers-to-keep", type=index_list, metavar="I,J,...",
                            help=f"0-based {side} blocks to keep")
    parser.add_argument("--keep", metavar="STRATEGY", help="every-other | spread:K | first:K | greedy:K")
    parser.add_argument("--valid-source", type=Path, help="greedy:K's validation sources")
    parser.add_argument("--valid-target", type=Path, help="greedy:K's validation references")
    parser.add_argument("--valid-limit", type=int, default=500, help="greedy:K: the first N pairs")
    parser.add_argument("--threads", type=int)
    return parser.parse_args(argv)


def index_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace("[", "").replace("]", "").split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block indices, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from toolkit.cli import reporting_errors

    with reporting_errors("toolkit-prune"):
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        prune(args)
    return 0


def prune(args: argparse.Namespace) -> int:
    """Load, choose the blocks, prune, write; returns the output's bytes."""
    check_output_path(args.output, args.checkpoint)
    plugins = get_plugins()
    state = load_checked(args.checkpoint, plugins, for_inference=True)
    cfg, task, model, state = load_for_inference(args.checkpoint, plugins, device="cpu", state=state)
    keep = chosen_blocks(args, state, task, model)
    kept = prune_model(model, keep)
    record_depth(cfg.model, model)
    options = cfg.plugins.options.get("layerdrop")
    if options is not None:  # the file is pruned already: loading it must not prune again
        options.encoder_layers_to_keep = options.decoder_layers_to_keep = None
    size = save_inference_checkpoint(args.output, cfg, task, model, plugins,
                                     pruned_from=provenance(args.checkpoint, state, kept),
                                     num_updates=state.get("num_updates"))
    original = os.path.getsize(args.checkpoint)
    print(f"kept encoder blocks {kept['encoder']}, decoder blocks {kept['decoder']}: {model.num_parameters():,} "
          f"parameters, {size:,} bytes ({size / original:.3f} of {original:,})")
    return size


def chosen_blocks(args: argparse.Namespace, state: dict, task, model: nn.Module) -> dict[str, list[int]]:
    """The blocks to keep per side: the explicit lists, else the strategy's choice."""
    history = pruned_history(state)
    keep = {}
    for side in SIDES:
        depth, given = len(getattr(model, side).layers), getattr(args, f"{side}_layers_to_keep")
        if given is not None:
            keep[side] = check_indices(side, given, depth, history)
            already = state.get("pruned_from", {}).get(f"{side}_layers")
            if already is not None and keep[side] == already and len(already) == depth:
                raise ConfigError(f"{side} layers to keep {given}: this checkpoint was already pruned to "
                                  f"these blocks{history}")
    if args.keep:
        for side in SIDES:
            if side not in keep:
                keep[side] = strategy_blocks(args, side, model, task)
    if not keep:
        raise ConfigError("nothing to prune: give --encoder-layers-to-keep, --decoder-layers-to-keep or --keep")
    return keep


def pruned_history(state: dict) -> str:
    record = state.get("pruned_from")
    if not record:
        return ""
    return (f"; it was pruned from {record['depth']['encoder']}+{record['depth']['decoder']} blocks "
            f"(kept encoder {record['encoder_layers']}, decoder {record['decoder_layers']}), and indices "
            f"count its current blocks")


def strategy_blocks(args: argparse.Namespace, side: str, model: nn.Module, task) -> list[int]:
    depth = len(getattr(model, side).layers)
    name, _, count = args.keep.partition(":")
    if name == "every-other" and not count:
        return spread(depth, max(depth // 2, 1))
    if name in ("spread", "first", "greedy") and count.isdigit():
        k = int(count)
        if name == "greedy":
            return greedy_blocks(args, side, model, task, k)
        return spread(depth, k) if name == "spread" else first(depth, k)
    raise ConfigError(f"--keep {args.keep!r}: expected every-other, spread:K, first:K or greedy:K")


def greedy_blocks(args: argparse.Namespace, side: str, model: nn.Module, task, k: int) -> list[int]:
    stack = getattr(model, side)
    check_count(len(stack.layers), k)
    batches = make_batches(task, *validation_text(args, task), model.max_positions())
    full = stack.layers

    def loss_without(kept: list[int]) -> float:
        stack.layers = nn.ModuleList([full[i] for i in kept])
        try:
            return token_nll(model, batches, task.tgt_dict.pad)
        finally:
            stack.layers = full

    kept = greedy(len(full), k, loss_without)
    logger.info("greedy %s blocks %s: validation nll %.4f (all %d: %.4f)", side, kept, loss_without(kept),
                len(full), loss_without(list(range(len(full)))))
    return kept


def validation_text(args: argparse.Namespace, task) -> tuple[list[str], list[str]]:
    if (args.valid_source is None) != (args.valid_target is None):
        raise ConfigError("--valid-source and --valid-target go together")
    if args.valid_source is None:
        if task.cfg.data is None:
            raise ConfigError("greedy pruning needs validation text: --valid-source and --valid-target")
        s = task.settings()
        folder = Path(task.cfg.data)
        args.valid_source, args.valid_target = folder / f"valid.{s.source_lang}", folder / f"valid.{s.target_lang}"
    sources, targets = read_lines(args.valid_source), read_lines(args.valid_target)
    if len(sources) != len(targets):
        raise ConfigError(f"{args.valid_source} has {len(sources)} lines but {args.valid_target} {len(targets)}")
    return sources[: args.valid_limit], targets[: args.valid_limit]


def provenance(path: Path, state: dict, kept: dict[str, list[int]]) -> dict:
    """What the output was pruned from, in the original model's block numbers."""
    record = state.get("pruned_from")
    if record:  # pruned again: map the kept blocks back to the original numbering
        kept = {side: [record[f"{side}_layers"][i] for i in kept[side]] for side in SIDES}
        depth = record["depth"]
    else:
        depth = {side: state["cfg"]["model"][f"{side}_layers"] for side in SIDES}
    return {"checkpoint": str(path), "depth": depth, **{f"{side}_layers": kept[side] for side in SIDES}}


if __name__ == "__main__":
    sys.exit(main())
