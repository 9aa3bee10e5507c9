"""The plugin's typed options (``+plugins.options.depth_adaptive.<key>=...``) and architecture."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from toolkit.models.architectures import transformer_small
from toolkit.models.transformer import TransformerConfig

CLASSIFIERS = ("shared", "separate")


@dataclass
class DepthAdaptiveOptions:
    """How the model's intermediate blocks are read out (these change the model: role "model")."""

    # shared: every block uses the decoder's output projection; separate: a classifier per block
    classifiers: str = "shared"
    block_norms: bool = False  # a layer norm per block before its classifier
    # a halting classifier: none | sequence | token_multinomial | token_geometric
    halting: str = "none"
    halting_hidden: int = 0  # token_geometric: K > 0 puts a hidden layer of K units under each chi
    train_only_halting: bool = False  # freeze everything else (e.g. fine-tuning an aligned model)


def transformer_depth_adaptive_small() -> TransformerConfig:
    """CPU scale: encoder 3 x 256, decoder 6 x 256, FFN 1024, 4 heads (``transformer_small`` width)."""
    return dataclasses.replace(transformer_small(), decoder_layers=6)
