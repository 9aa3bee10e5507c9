"""Choosing the blocks to keep and removing the others from a model."""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from toolkit.errors import ConfigError

from layerdrop.options import SIDES


def spread(depth: int, keep: int) -> list[int]:
    """``keep`` blocks evenly spread over ``depth`` (every other block when ``keep = depth / 2``)."""
    check_count(depth, keep)
    return [i * depth // keep for i in range(keep)]


def first(depth: int, keep: int) -> list[int]:
    """The lowest ``keep`` blocks."""
    check_count(depth, keep)
    return list(range(keep))


def check_count(depth: int, keep: int) -> None:
    if not 1 <= keep <= depth:
        raise ConfigError(f"cannot keep {keep} of {depth} blocks: keep at least 1 and at most {depth}")


def check_indices(side: str, indices: Sequence[int], depth: int, history: str = "") -> list[int]:
    """``indices`` sorted, after refusing an empty list, repeats and indices outside 0..depth-1.

    :param history: how the model came to its depth (a pruned checkpoint's record), said in the
        error so that indices of the original model are recognised as such.
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ConfigError(f"{side} layers to keep: the list is empty; keep at least one block")
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise ConfigError(f"{side} layers to keep: block {repeated[0]} is listed more than once")
    outside = [i for i in indices if not 0 <= i < depth]
    if outside:
        raise ConfigError(f"{side} layers to keep: block {outside[0]} is out of range; the model has {depth} "
                          f"{side} blocks (0..{depth - 1}){history}")
    return sorted(indices)


def prune_stack(stack: nn.Module, keep: Sequence[int]) -> None:
    """Keep only the blocks ``keep`` (sorted, checked) of an encoder or decoder, renumbered 0..K-1."""
    if getattr(stack, "exit_heads", None) is not None and len(keep) < len(stack.layers):
        raise ConfigError("this decoder has per-block exit classifiers (depth_adaptive classifiers=separate); "
                          "pruning it would leave them on the wrong blocks")
    stack.layers = nn.ModuleList([stack.layers[i] for i in keep])


def prune_model(model: nn.Module, keep: dict[str, Sequence[int]]) -> dict[str, list[int]]:
    """Prune ``model`` in place to the blocks ``keep[side]`` (sides not given stay whole).

    Returns the checked indices kept per side; the model's config must then record the new
    depths (``record_depth``).
    """
    kept = {}
    for side in SIDES:
        stack = getattr(model, side)
        indices = keep.get(side)
        kept[side] = check_indices(side, indices, len(stack.layers)) if indices is not None else list(
            range(len(stack.layers)))
        prune_stack(stack, kept[side])
    return kept


def record_depth(model_cfg, model: nn.Module) -> None:
    """Write the model's depths into its config (``model_cfg.encoder_layers``, ``decoder_layers``)."""
    for side in SIDES:
        setattr(model_cfg, f"{side}_layers", len(getattr(model, side).layers))


def greedy(depth: int, keep: int, loss_without: Callable[[list[int]], float]) -> list[int]:
    """Remove one block at a time, each time the one whose removal costs the least.

    :param loss_without: the validation loss of the model keeping only the given blocks.
    """
    check_count(depth, keep)
    kept = list(range(depth))
    while len(kept) > keep:
        trials = {block: loss_without([i for i in kept if i != block]) for block in kept}
        kept.remove(min(trials, key=trials.get))
    return kept
