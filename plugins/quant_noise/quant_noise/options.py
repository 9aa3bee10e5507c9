"""The plugin's typed options (``+plugins.options.quant_noise.<key>=...``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from toolkit.errors import ConfigError

SCHEMES = ("ipq", "centroid", "int8")


@dataclass
class QuantNoiseOptions:
    """Noise settings shape training only; ``quantized`` records the layout of a quantized
    checkpoint (module name -> spec), which its model needs to be rebuilt (written by
    ``toolkit-quantize``, never by hand)."""

    # the noise of the target scheme: ipq (blocks dropped, the rest rescaled) | centroid (blocks
    # take their nearest centroid, k-means on the weight every codebook_interval uses) | int8
    scheme: str = "ipq"
    linear_rate: float = 0.0  # fraction of each Linear weight's blocks noised per step
    linear_block_size: int = 8  # block = this many consecutive input weights of one output row
    embedding_rate: float = 0.0  # the same for embedding tables (rows cut along the embedding dim)
    embedding_block_size: int = 8
    # a regular expression: only modules whose name it finds get noise (e.g. "layers\\." for
    # the blocks' Linears, fairseq's choice, leaving embeddings and output projection alone);
    # empty: every Linear and Embedding
    modules: str = ""
    # gradients of the noised weights: straight through to every weight (the paper), or through
    # the noise as computed (false: a dropped iPQ block gets none; fairseq's implementation)
    straight_through: bool = True
    centroids: int = 256  # scheme centroid: codebook size (toolkit-quantize --centroids)
    codebook_interval: int = 100  # scheme centroid: k-means re-run every this many uses of a weight
    quantized: dict[str, str] = field(default_factory=dict)  # module -> "int8" | "ipq:B:K" (toolkit-quantize)


def check_noise(options: QuantNoiseOptions) -> None:
    try:
        re.compile(options.modules)
    except re.error as error:
        raise ConfigError(f"plugins.options.quant_noise.modules is not a regular expression "
                          f"({options.modules!r}: {error})") from error
    if options.scheme not in SCHEMES:
        raise ConfigError(f"plugins.options.quant_noise.scheme must be one of {SCHEMES}, got {options.scheme!r}")
    for key in ("centroids", "codebook_interval"):
        if getattr(options, key) < 1:
            raise ConfigError(f"plugins.options.quant_noise.{key} must be >= 1, got {getattr(options, key)}")
    for kind in ("linear", "embedding"):
        rate, block = getattr(options, f"{kind}_rate"), getattr(options, f"{kind}_block_size")
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"plugins.options.quant_noise.{kind}_rate must be in [0, 1), got {rate}")
        if block < 1:
            raise ConfigError(f"plugins.options.quant_noise.{kind}_block_size must be >= 1, got {block}")
