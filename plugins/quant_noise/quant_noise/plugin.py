"""The quant_noise plugin's hooks: options, noise in training, rebuilding quantized models."""

from __future__ import annotations

import logging

from torch import nn

from toolkit import hookimpl

from quant_noise.ipq import PQWeight
from quant_noise.layout import apply_layout, check_layout
from quant_noise.noise import attach_noise, codebook_state, load_codebook_state
from quant_noise.options import QuantNoiseOptions, check_noise

NAME = "quant_noise"
logger = logging.getLogger(__name__)


@hookimpl
def toolkit_register(registries) -> None:
    # noise shapes training only; a quantized checkpoint records the plugin as "model" itself
    registries.plugin_options.add(NAME, QuantNoiseOptions, role="training")


@hookimpl
def toolkit_modify_model(model, cfg) -> None:
    """A quantized checkpoint's layout: its modules replaced (empty) before the weights load;
    noise rates: noised weights in training mode."""
    options = cfg.plugins.options.get(NAME)
    if options is None:
        return
    check_noise(options)
    if options.quantized:
        layout = dict(options.quantized)
        check_layout(model, layout)
        apply_layout(model, layout, from_weights=False)
        return
    rates = {nn.Linear: (options.linear_rate, options.linear_block_size),
             nn.Embedding: (options.embedding_rate, options.embedding_block_size)}
    changed = attach_noise(model, rates, options.scheme, options.modules, options.straight_through,
                           options.centroids, options.codebook_interval)
    if changed:
        logger.info("quant_noise: %s noise on %d modules", options.scheme, len(changed))


@hookimpl
def toolkit_checkpoint_state(trainer):
    """Scheme centroid: every codebook and its use count, so a resumed run draws the same noise."""
    codebooks = codebook_state(trainer.module)
    return {NAME: {"codebooks": codebooks}} if codebooks else None


@hookimpl
def toolkit_load_checkpoint_state(state, trainer) -> None:
    """On resume, the codebooks the run had (inference needs none: noise is off in eval mode)."""
    saved = (state.get(NAME) or {}).get("codebooks")
    if trainer is not None and saved:
        load_codebook_state(trainer.module, saved)


@hookimpl
def toolkit_weights_loaded(model, cfg, origin: str) -> None:
    """Training a quantized model fine-tunes its iPQ centroids (the codes stay fixed): they
    become parameters here, before the optimizer is built; at inference they stay fp16."""
    options = cfg.plugins.options.get(NAME)
    if options is None or not options.quantized or origin == "inference":
        return
    quantized = [module for module in model.modules() if isinstance(module, PQWeight)]
    for module in {id(m): m for m in quantized}.values():
        module.train_centroids()
