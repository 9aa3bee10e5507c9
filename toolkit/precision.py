"""Precision names (``fp32``, ``bf16``, ``fp16``) and the torch dtypes they stand for."""

from __future__ import annotations

import torch

from toolkit.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def dtype_of(precision: str) -> torch.dtype:
    """The dtype of a precision name; an unknown name lists the known ones."""
    try:
        return DTYPES[precision]
    except KeyError:
        raise ConfigError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}") from None
