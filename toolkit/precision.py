"""Precision names (``fp32``, ``bf16``, ``fp16``) and the torch dtypes they stand for."""

from __future__ import annotations

import argparse

import torch

from toolkit.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision`` for a script that loads a model to decode: the weights' type, one of
    ``DTYPES`` (bf16 decodes faster on a CPU with AVX-512 BF16: the README's measurement)."""
    parser.add_argument("--precision", default="fp32", choices=list(DTYPES),
                        help="the weights' type while decoding (default fp32)")


def dtype_of(precision: str) -> torch.dtype:
    """The dtype of a precision name; an unknown name lists the known ones."""
    try:
        return DTYPES[precision]
    except KeyError:
        raise ConfigError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}") from None
