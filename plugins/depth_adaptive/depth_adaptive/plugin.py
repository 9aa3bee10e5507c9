"""The ``depth_adaptive`` plugin's hooks: what it registers and how it changes a model."""

from __future__ import annotations

from toolkit import hookimpl

from depth_adaptive.criterion import DepthAdaptiveCriterion, DepthAdaptiveCriterionConfig
from depth_adaptive.heads import attach_exit_heads
from depth_adaptive.options import DepthAdaptiveOptions, transformer_depth_adaptive_small
from depth_adaptive.policies import (ConfidenceConfig, ConfidenceExit, EntropyConfig, EntropyExit, PatienceConfig,
                                     PatienceExit)

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


@hookimpl
def toolkit_modify_model(model, cfg) -> None:
    """Per-block classifiers or norms, when ``plugins.options.depth_adaptive`` asks for them."""
    options = cfg.plugins.options.get(NAME)
    if options is not None:
        attach_exit_heads(model.decoder, options)
