"""The layerdrop plugin's hooks: options, block dropping in training, pruning at load time."""

from __future__ import annotations

import logging

from toolkit import hookimpl
from toolkit.errors import ConfigError

from layerdrop.dropping import BlockDropper
from layerdrop.options import SIDES, LayerDropOptions, check_rates
from layerdrop.pruning import prune_model, record_depth

NAME = "layerdrop"
logger = logging.getLogger(__name__)


@hookimpl
def toolkit_register(registries) -> None:
    registries.plugin_options.add(NAME, LayerDropOptions, role="training")


@hookimpl
def toolkit_modify_model(model, cfg) -> None:
    """Give each stack with a positive rate a ``BlockDropper`` (used in training mode only)."""
    options = cfg.plugins.options.get(NAME)
    if options is None:
        return
    check_rates(options)
    for index, side in enumerate(SIDES):
        rate = getattr(options, f"{side}_rate")
        if rate > 0 or options.subnet_rate > 0:
            stack = getattr(model, side)
            if not hasattr(stack, "skip_blocks"):
                raise ConfigError(f"layerdrop: the {side} of {type(model).__name__} has no skip_blocks "
                                  f"(toolkit.models.transformer.skipped_blocks), so it cannot skip blocks")
            stack.skip_blocks = BlockDropper(len(stack.layers), rate, cfg.common.seed, side=index,
                                              start=options.start_update, subnet_rate=options.subnet_rate,
                                              subnet_depths=options.subnet_depths or [])
            model.find_unused_parameters = True


@hookimpl
def toolkit_train_begin(trainer) -> None:
    options = trainer.cfg.plugins.options.get(NAME)
    if options is None:
        return
    if options.encoder_layers_to_keep is not None or options.decoder_layers_to_keep is not None:
        raise ConfigError("plugins.options.layerdrop.*_layers_to_keep prunes a model for decoding "
                          "(+plugin_options.layerdrop... of toolkit-generate, or toolkit-prune), not in training")
    check_subnet_depths(trainer.module, options)


def check_subnet_depths(model, options: LayerDropOptions) -> None:
    """Each of ``subnet_depths`` must be a depth of both stacks: checked when training begins, not
    when a model is built, since a checkpoint pruned below those depths keeps the options and
    must still load."""
    if options.subnet_rate == 0:
        return
    for side in SIDES:
        blocks = len(getattr(model, side).layers)
        for depth in options.subnet_depths:
            if not 1 <= depth <= blocks:
                raise ConfigError(f"plugins.options.layerdrop.subnet_depths: {depth} is not a depth of the "
                                  f"{side}'s {blocks} blocks (1..{blocks})")


@hookimpl(wrapper=True)
def toolkit_train_step(trainer, validating: bool):
    """Tell the droppers which update this forward belongs to (the same on every rank)."""
    if not validating:
        for side in SIDES:
            dropper = getattr(getattr(trainer.module, side), "skip_blocks", None)
            if isinstance(dropper, BlockDropper):
                dropper.update = trainer.num_updates
    return (yield)


@hookimpl
def toolkit_prepare_inference(model, cfg) -> None:
    """``+plugin_options.layerdrop.{encoder,decoder}_layers_to_keep=[...]``: prune as loaded."""
    options = cfg.plugins.options.get(NAME)
    if options is None:
        return
    keep = {side: getattr(options, f"{side}_layers_to_keep") for side in SIDES}
    keep = {side: indices for side, indices in keep.items() if indices is not None}
    if keep:
        kept = prune_model(model, keep)
        record_depth(cfg.model, model)
        logger.info("pruned at load time to encoder blocks %s, decoder blocks %s", kept["encoder"], kept["decoder"])
