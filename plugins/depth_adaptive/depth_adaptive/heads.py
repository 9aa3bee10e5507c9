"""Per-block classifiers: the core decoder scores a block's state with ``exit_heads[block]``."""

from __future__ import annotations

import torch
from torch import nn

from toolkit.errors import ConfigError

from depth_adaptive.options import CLASSIFIERS, DepthAdaptiveOptions


class ExitHead(nn.Module):
    """A block's classifier: an optional norm, then a projection onto the vocabulary."""

    def __init__(self, norm: nn.Module, projection: nn.Linear):
        super().__init__()
        self.norm, self.projection = norm, projection

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., V)."""
        return self.projection(self.norm(hidden))


def attach_exit_heads(decoder: nn.Module, options: DepthAdaptiveOptions) -> None:
    """Give every block but the last its own classifier (the last keeps the decoder's own).

    ``shared`` projections reuse the output layer's weight (tied, no new parameters unless
    ``block_norms``); ``separate`` ones are new, initialised as the core initialises an untied
    output layer.
    """
    if options.classifiers not in CLASSIFIERS:
        raise ConfigError(f"plugins.options.depth_adaptive.classifiers must be one of {CLASSIFIERS}, "
                         f"got {options.classifiers!r}")
    if options.classifiers == "shared" and not options.block_norms:
        return  # the core's default: every block through the final norm and output projection
    shared = decoder.output_projection
    dim, vocab = shared.in_features, shared.out_features
    heads = []
    for _ in range(len(decoder.layers) - 1):
        norm = nn.LayerNorm(dim) if options.block_norms else decoder.final_norm
        if options.classifiers == "shared":
            projection = shared
        else:
            projection = nn.Linear(dim, vocab, bias=False)
            nn.init.normal_(projection.weight, mean=0.0, std=dim**-0.5)
        heads.append(ExitHead(norm, projection))
    decoder.exit_heads = nn.ModuleList(heads)
