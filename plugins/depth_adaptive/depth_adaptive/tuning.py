"""Tuned thresholds: the file ``toolkit-tune-exits`` writes and the policies read.

The file records the model it was tuned for by a fingerprint of its weights, so thresholds
tuned on one checkpoint are never applied to another.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from toolkit.errors import UserError
from toolkit.files import atomic_write_text

FORMAT = "toolkit-tuned-exits/2"  # /1 hashed the weights as they were, so a bf16 copy did not match


class TuningFileError(UserError, ValueError):
    """A tuning file that is missing, malformed, or for another model or policy."""


def fingerprint(model: torch.nn.Module) -> str:
    """A hash of the model's weights that survives loading them in another precision: each
    tensor's name, shape, mean and mean absolute value, to 3 significant digits, of its values
    rounded to bf16. An fp32 model and its bf16 copy hash the very same numbers (tested); an fp16
    copy rounds twice and matches unless a mean sits on a rounding boundary. First 16 hex digits."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        values = tensor.detach()
        values = (values.to(torch.bfloat16) if values.is_floating_point() else values).double()
        digest.update(f"{name}:{tuple(tensor.shape)}:{values.mean():.3g}:{values.abs().mean():.3g}".encode())
    return digest.hexdigest()[:16]


def write_tuned(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write a tuning record (``policy``, ``settings``, ``model``, ``frontier`` ...) atomically."""
    atomic_write_text(path, json.dumps({"format": FORMAT, **record}, indent=1) + "\n")


def read_tuned(path: str | os.PathLike, policy: str, model: torch.nn.Module) -> dict[str, Any]:
    """The tuned settings in ``path`` for ``policy``, once the file is known to be for ``model``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TuningFileError(f"tuned thresholds file {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise TuningFileError(f"cannot read tuned thresholds file {path}: {error}") from None
    if isinstance(record, dict) and record.get("format") == "toolkit-tuned-exits/1":
        raise TuningFileError(f"{path} was written by an older toolkit-tune-exits (format 1, whose model hash "
                              f"changed with the weights' precision): tune again")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise TuningFileError(f"{path} is not a toolkit-tune-exits file (format {FORMAT})")
    if record["policy"] != policy:
        raise TuningFileError(f"{path} holds thresholds of the {record['policy']} policy, not {policy}")
    if record["model"] != fingerprint(model):
        raise TuningFileError(f"{path} was tuned for another model ({record['checkpoint']}, weights "
                              f"{record['model']}), not this checkpoint (weights {fingerprint(model)})")
    return record["settings"]
