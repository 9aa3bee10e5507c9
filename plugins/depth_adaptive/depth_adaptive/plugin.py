"""The ``depth_adaptive`` plugin's hooks: what it registers and how it changes a model."""

from __future__ import annotations

from toolkit import hookimpl
from toolkit.errors import ConfigError

from depth_adaptive.criterion import DepthAdaptiveCriterion, DepthAdaptiveCriterionConfig
from depth_adaptive.halting import HaltingHead
from depth_adaptive.heads import attach_exit_heads
from depth_adaptive.options import DepthAdaptiveOptions, transformer_depth_adaptive_small
from depth_adaptive.policies import (ConfidenceConfig, ConfidenceExit, EntropyConfig, EntropyExit, HaltingConfig,
                                     HaltingExit, PatienceConfig, PatienceExit)

NAME = "depth_adaptive"


@hookimpl
def toolkit_register(registries) -> None:
    registries.plugin_options.add(NAME, DepthAdaptiveOptions, role="model")
    registries.register_architecture("transformer", "transformer_depth_adaptive_small")(
        transformer_depth_adaptive_small)
    registries.criterion.add(NAME, DepthAdaptiveCriterion, DepthAdaptiveCriterionConfig)
    registries.exit_policy.add("confidence", ConfidenceExit, ConfidenceConfig)
    registries.exit_policy.add("entropy", EntropyExit, EntropyConfig)
    registries.exit_policy.add("patience", PatienceExit, PatienceConfig)
    registries.exit_policy.add("halting", HaltingExit, HaltingConfig)


@hookimpl
def toolkit_modify_model(model, cfg) -> None:
    """Per-block classifiers or norms and a halting classifier, when the options ask for them."""
    options = cfg.plugins.options.get(NAME)
    if options is None:
        return
    attach_exit_heads(model.decoder, options)
    if options.halting != "none":
        model.halting = HaltingHead(options.halting, len(model.decoder.layers), cfg.model.encoder_embed_dim,
                                    cfg.model.decoder_embed_dim, options.halting_hidden)


@hookimpl(wrapper=True)
def toolkit_train_step(criterion, trainer):
    """Tell the criterion which update this forward belongs to (``exit_distill_start``)."""
    if isinstance(criterion, DepthAdaptiveCriterion):
        criterion.num_updates = trainer.num_updates
    return (yield)


@hookimpl
def toolkit_weights_loaded(model, cfg, origin: str) -> None:
    """``train_only_halting``: only the halting classifier trains (frozen before the optimizer exists)."""
    options = cfg.plugins.options.get(NAME)
    if options is None or not options.train_only_halting or origin == "inference":
        return
    if getattr(model, "halting", None) is None:
        raise ConfigError("plugins.options.depth_adaptive.train_only_halting needs a halting classifier "
                         "(plugins.options.depth_adaptive.halting)")
    halting = {id(p) for p in model.halting.parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in halting)
