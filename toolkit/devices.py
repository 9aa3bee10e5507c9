"""Where a model runs: device names, and the devices and dtypes that plugin modules allow.

A module that runs only on some devices or in some dtypes (an int8 kernel runs on the CPU, in
float32 activations) declares it with class or instance attributes::

    class Int8Linear(nn.Module):
        supported_devices = ("cpu",)            # device types
        supported_dtypes = (torch.float32,)      # dtypes its inputs and float state may have

``check_placement`` then turns an impossible request (that model on CUDA, or in fp16) into one
clear error before any work, naming the modules; ``load_for_inference`` and
``toolkit-generate precision=...`` call it.
"""

from __future__ import annotations

import torch

from toolkit.errors import UserError


class PlacementError(UserError, ValueError):
    """A device or dtype that some of a model's modules cannot run in."""


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; other names as torch reads them."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_placement(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Fail, naming the modules, if any of ``model``'s modules cannot run on ``device`` in ``dtype``."""
    problems = []
    for name, module in model.named_modules():
        devices = getattr(module, "supported_devices", None)
        dtypes = getattr(module, "supported_dtypes", None)
        kind = f"{name or 'the model'} ({type(module).__name__})"
        if devices is not None and device.type not in devices:
            problems.append(f"{kind} runs only on {', '.join(devices)}, not {device.type}")
        if dtypes is not None and dtype not in dtypes:
            problems.append(f"{kind} runs only in {', '.join(map(_dtype_name, dtypes))}, not {_dtype_name(dtype)}")
    if problems:
        shown = problems[:5] + ([f"... and {len(problems) - 5} more"] if len(problems) > 5 else [])
        raise PlacementError("this model cannot run as asked:\n  " + "\n  ".join(shown))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
