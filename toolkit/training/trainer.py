"""One optimizer update at a time: forward/backward over accumulated batches, mixed
precision, gradient normalization and clipping, the optimizer and schedule steps."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import torch
from omegaconf import DictConfig

from toolkit.checkpoint import CheckpointError
from toolkit.data.batching import map_tensors
from toolkit.errors import NonFiniteError
from toolkit.devices import resolve_device
from toolkit.plugins import PluginSession
from toolkit.precision import dtype_of
from toolkit.training import sharding
from toolkit.training.distributed import DataParallelModel, DistributedContext

logger = logging.getLogger(__name__)


def move_to(sample: Any, device: torch.device) -> Any:
    return map_tensors(sample, lambda tensor: tensor.to(device, non_blocking=True))


class Trainer:
    """Owns model, criterion, optimizer, schedule and loss scaler, and their saved state."""

    def __init__(self, cfg: DictConfig, task, model: torch.nn.Module, criterion: torch.nn.Module,
                 plugins: PluginSession, distributed: DistributedContext | None = None):
        self.cfg, self.task, self.plugins = cfg, task, plugins
        self.distributed = distributed or DistributedContext()
        self.device = resolve_device(cfg.common.device)
        if self.device.type == "cuda" and self.distributed.enabled:
            self.device = torch.device("cuda", self.distributed.local_rank)
        self.module = model.to(self.device)  # the model itself, for saving and generation
        self.model = self.module  # what the training step calls: DDP-wrapped when distributed
        self.sharded = self.distributed.enabled and cfg.common.distributed_strategy == "fsdp"
        if self.sharded:  # in place: the module's own forward gathers and frees the shards
            sharding.shard_model(self.module)
        elif self.distributed.enabled:
            self.model = DataParallelModel(self.module, device_ids=[self.device] if self.device.type == "cuda" else None,
                                           find_unused_parameters=getattr(self.module, "find_unused_parameters", False))
        if cfg.common.compile:  # after DDP, whose bucket boundaries then split the graph
            self.model = torch.compile(self.model)
        self.criterion = criterion.to(self.device)
        self.precision = cfg.common.precision
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = plugins.registries.optimizer.build(cfg.optim, params)
        self.lr_scheduler = plugins.registries.lr_scheduler.build(cfg.lr_scheduler, self.optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.num_updates = 0
        self.skipped_updates = 0  # fp16 steps dropped because gradients overflowed

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype_of(self.precision))

    def train_step(self, samples: list[dict[str, Any]]) -> dict[str, Any] | None:
        """One update from ``samples`` (``update_freq`` batches); ``None`` if it was skipped.

        Returns summed logging outputs (over all ranks) plus ``grad_norm`` and ``lr``. Gradients
        are divided by the summed ``sample_size`` of every batch of every rank.
        """
        self.model.train()
        self.criterion.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, Any] = {}
        sample_size, loss_sum = 0.0, 0.0
        for i, sample in enumerate(samples):
            sample = move_to(sample, self.device)
            last = i == len(samples) - 1
            # DDP and FSDP synchronize gradients on the last batch of an update only
            sync = contextlib.nullcontext()
            if self.sharded:
                self.module.set_requires_gradient_sync(last)
            elif self.distributed.enabled and not last:
                sync = self.model.no_sync()
            with sync:
                with self.autocast():
                    loss, size, logging_output = self.plugins.hook.toolkit_train_step(
                        model=self.model, criterion=self.criterion, sample=sample, trainer=self, validating=False)
                self.scaler.scale(loss).backward()
            sample_size, loss_sum = sample_size + size, loss_sum + loss.detach().float()
            for key, value in logging_output.items():
                totals[key] = totals.get(key, 0) + value
        grad_scale = 1.0
        if self.distributed.enabled:  # DDP/FSDP averaged gradients over ranks; undo, then normalize
            totals = self.distributed.sum_metrics({**totals, "_sample_size": sample_size, "_loss": loss_sum},
                                                  self.device)
            sample_size, loss_sum = totals.pop("_sample_size"), totals.pop("_loss")
            grad_scale = self.distributed.world_size
        self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch._foreach_mul_([p.grad for p in params], grad_scale / max(sample_size, 1.0))
        clip = self.cfg.optimization.clip_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
        if hasattr(grad_norm, "full_tensor"):  # sharded parameters give a distributed tensor
            grad_norm = grad_norm.full_tensor()
        if self.precision == "fp16":
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skips the step when gradients are not finite
            self.scaler.update()
            if self.scaler.get_scale() < scale:
                self.skipped_updates += 1
                logger.warning("gradient overflow at update %d: step skipped, loss scale lowered to %g",
                               self.num_updates + 1, self.scaler.get_scale())
                return None
        else:
            self._check_finite(loss_sum, grad_norm)
            self.optimizer.step()
        self.num_updates += 1
        totals["lr"] = self.lr_scheduler.step_update(self.num_updates)
        totals["grad_norm"] = grad_norm.detach()
        return totals

    def _check_finite(self, loss: Any, grad_norm: torch.Tensor) -> None:
        """Stop (fp32, bf16) before a step whose loss or gradient is NaN or infinite: it would
        make the weights NaN. One device sync, as the gradient check alone took."""
        values = torch.stack([torch.as_tensor(loss, dtype=torch.float32, device=grad_norm.device).reshape(()),
                              grad_norm.detach().float().reshape(())])
        if bool(torch.isfinite(values).all()):
            return
        loss, norm = values.tolist()
        what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {norm}"
        raise NonFiniteError(f"training diverged at update {self.num_updates + 1}: {what}; the run stops before "
                             f"that update is applied. Lower optim.lr (now {self.cfg.optim.get('lr')}), set "
                             f"optimization.clip_norm, or check the data and the model")

    @torch.no_grad()
    def valid_step(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The loss of one validation batch, through the same hook as training (``validating=True``)."""
        self.module.eval()
        self.criterion.eval()
        with self.autocast():
            _, _, logging_output = self.plugins.hook.toolkit_train_step(
                model=self.module, criterion=self.criterion, sample=move_to(sample, self.device), trainer=self,
                validating=True)
        return logging_output

    def state_dict(self) -> dict[str, Any]:
        """Everything to resume from; with FSDP a collective that gathers full tensors."""
        if self.sharded:
            model_state = sharding.full_model_state(self.module)
            optimizer_state = sharding.full_optimizer_state(self.module, self.optimizer)
        else:
            model_state, optimizer_state = self.module.state_dict(), self.optimizer.state_dict()
        return {
            "model": model_state,
            "optimizer": optimizer_state,
            "sharded_optimizer": self.sharded,  # FSDP keys optimizer state by parameter name
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "num_updates": self.num_updates,
            "skipped_updates": self.skipped_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if bool(state.get("sharded_optimizer")) != self.sharded:
            kinds = {True: "an FSDP", False: "a replicated"}
            written, now = kinds[not self.sharded], kinds[self.sharded]
            raise CheckpointError(f"this checkpoint's optimizer state comes from {written} run and cannot resume "
                                  f"{now} one: set common.distributed_strategy as in the original run")
        if self.sharded:
            sharding.load_full_state(self.module, self.optimizer, state["model"], state["optimizer"])
        else:
            self.module.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.num_updates = int(state["num_updates"])
        self.skipped_updates = int(state.get("skipped_updates", 0))
