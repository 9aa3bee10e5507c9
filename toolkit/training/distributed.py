"""Data-parallel training on ``torch.distributed``, as started by torchrun.

``torchrun --nproc_per_node=K -m toolkit.cli.train ...`` (or ``torchrun ... $(which toolkit-train)``)
sets RANK, WORLD_SIZE and LOCAL_RANK; ``init_distributed`` then joins the process group (gloo on
CPU, nccl on GPU). Multi-node runs use torchrun's own rendezvous flags (``--nnodes``,
``--node_rank``, ``--rdzv_endpoint``); nothing here changes for them.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass
class DistributedContext:
    """This process's place in the job; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def sum_metrics(self, totals: dict[str, Any], device: torch.device) -> dict[str, float]:
        """Each metric summed over every rank (one collective; on ``device``, which must suit
        the backend: NCCL reduces only CUDA tensors)."""
        keys = sorted(totals)
        device = device if device.type == "cuda" else torch.device("cpu")
        values = torch.tensor([float(totals[k]) for k in keys], dtype=torch.float64, device=device)
        return dict(zip(keys, self.all_reduce_sum(values).tolist()))

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on any (e.g. a signal reached one rank)."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)], device=_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def all_gather(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: str) -> DistributedContext:
    """Join the torchrun job described by the environment, if there is one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    context = DistributedContext(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(context.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if not context.is_master:
        logging.getLogger("toolkit").setLevel(logging.WARNING)
    logger.warning("rank %d of %d (%s)", context.rank, world_size, dist.get_backend())
    return context


def shutdown(context: DistributedContext) -> None:
    """Leave the job. Collective work still referenced (a DDP reducer in a reference cycle) is
    collected first: gloo threads that outlive the process group abort the interpreter at exit."""
    if context.enabled and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


class DataParallelModel(torch.nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that also exposes the wrapped model's attributes.

    Criterions and plugins call ``model.log_probs``, ``model.decoder`` and so on whether or not
    the run is distributed; calling the wrapper itself (``model(**net_input)``) is what
    synchronizes gradients.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
