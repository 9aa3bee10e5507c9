"""Fully sharded data parallelism (FSDP2, ``torch.distributed.fsdp.fully_shard``).

For models that do not fit one device: each block's parameters, gradients and optimizer
state live sharded across ranks and are gathered only while the block runs. Every block of
every ``nn.ModuleList`` (the encoder's and decoder's layers) is one sharding unit; the rest
(embeddings, tied output layer, final norms) is the root unit. Checkpoints hold full,
unsharded tensors, gathered on every rank and written by rank 0, so a checkpoint of a sharded
run loads anywhere: in ``toolkit-generate``, in a DDP run, in a single process.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def shard_model(module: nn.Module) -> nn.Module:
    """Shard ``module`` in place (its class becomes an FSDP module) and return it."""
    from torch.distributed.fsdp import fully_shard

    for child in list(module.modules()):
        if isinstance(child, nn.ModuleList):
            for block in child:
                fully_shard(block)
    fully_shard(module)
    return module


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def _full_options(**kwargs: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A sharded model's unsharded state on CPU (a collective: every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_full_options(cpu_offload=True))


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's unsharded state, keyed like ``optimizer.state_dict()`` (a collective)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(module, optimizer, options=_full_options(cpu_offload=True))


def load_full_state(module: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Any],
                    optimizer_state: dict[str, Any]) -> None:
    """Give every rank its shards of a full model and optimizer state (a collective)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
    from torch.distributed.tensor import DTensor, distribute_tensor

    # by hand rather than set_model_state_dict, which trips over tied (shared) parameters
    sharded = {}
    for name, current in module.state_dict().items():
        full = model_state[name].to(current.device, current.dtype)
        sharded[name] = (distribute_tensor(full, current.device_mesh, current.placements)
                         if isinstance(current, DTensor) else full)
    module.load_state_dict(sharded)
    set_optimizer_state_dict(module, optimizer, optimizer_state, options=_full_options())

