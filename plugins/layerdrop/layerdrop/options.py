"""The plugin's typed options (``+plugins.options.layerdrop.<key>=...`` in training,
``+plugin_options.layerdrop.<key>=...`` at generation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from toolkit.errors import ConfigError

SIDES = ("encoder", "decoder")


@dataclass
class LayerDropOptions:
    """Rates shape training only (role "training": a LayerDrop-trained checkpoint decodes without
    the plugin); the blocks to keep prune a model as it is loaded for decoding."""

    encoder_rate: float = 0.0  # probability that a training forward skips each encoder block
    decoder_rate: float = 0.0  # the same for each decoder block
    start_update: int = 0  # no block is skipped before this update ("late" LayerDrop: learn first, then robustness)
    # "aligned" LayerDrop: the probability that an update trains only the blocks every-other pruning keeps
    # (toolkit-prune --keep spread) at a depth drawn from subnet_depths, the same depth on both sides
    subnet_rate: float = 0.0
    subnet_depths: Optional[list[int]] = None
    encoder_layers_to_keep: Optional[list[int]] = None  # 0-based blocks kept at load time; None: all
    decoder_layers_to_keep: Optional[list[int]] = None


def check_rates(options: LayerDropOptions) -> None:
    """Each rate must lie in [0, 1): a rate of 1 would leave no block to train."""
    for side in SIDES:
        rate = getattr(options, f"{side}_rate")
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"plugins.options.layerdrop.{side}_rate must be in [0, 1), got {rate}")
    if not 0.0 <= options.subnet_rate <= 1.0:
        raise ConfigError(f"plugins.options.layerdrop.subnet_rate must be in [0, 1], got {options.subnet_rate}")
    if options.subnet_rate > 0 and not options.subnet_depths:
        raise ConfigError("plugins.options.layerdrop.subnet_rate > 0 needs subnet_depths (e.g. [3]): the depths "
                          "whose sub-networks the updates train")
    if options.start_update < 0:
        raise ConfigError(f"plugins.options.layerdrop.start_update must be >= 0, got {options.start_update}")
