"""Iterative product quantization: the layers are quantized in stages (feed-forward, then
attention, then embeddings), and after each stage the centroids and the weights not yet
quantized are fine-tuned on the training data by the core's trainer."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from toolkit.checkpoint import save_inference_checkpoint
from toolkit.plugins import PluginSession

from quant_noise.ipq import PQWeight
from quant_noise.layout import FFN, apply_layout

STAGES = ("ffn", "attention", "embeddings")
NAME = "quant_noise"
logger = logging.getLogger(__name__)


def stage_of(name: str) -> str:
    if name.endswith("embed_tokens") or name == "decoder.output_projection":
        return "embeddings"
    return "ffn" if name.endswith(FFN) else "attention"


def freeze_centroids(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, PQWeight):
            module.freeze()


def quantize_in_stages(cfg: DictConfig, task, model: nn.Module, plugins: PluginSession, layout: dict[str, str],
                       updates: int, lr: float, workdir: Path) -> nn.Module:
    """Quantize ``model`` to ``layout`` stage by stage, fine-tuning ``updates`` updates after each
    stage (none: one shot). Returns the quantized model (centroids frozen, fp16)."""
    done: dict[str, str] = {}
    for stage in STAGES:
        part = {name: spec for name, spec in layout.items() if stage_of(name) == stage}
        if not part:
            continue
        apply_layout(model, part, from_weights=True)
        done.update(part)
        if updates > 0:
            model = finetune(cfg, task, model, plugins, dict(done), updates, lr, workdir / stage)
    freeze_centroids(model)
    return model


def finetune(cfg: DictConfig, task, model: nn.Module, plugins: PluginSession, layout: dict[str, str],
             updates: int, lr: float, workdir: Path) -> nn.Module:
    """``updates`` updates of the core's trainer from the model as it is (its quantized modules
    rebuilt from ``layout``): iPQ centroids and float weights train, codes and int8 stay fixed."""
    from toolkit.training.train import train  # the training loop, only when fine-tuning

    workdir.mkdir(parents=True, exist_ok=True)
    freeze_centroids(model)
    run_cfg = stage_config(cfg, layout, updates, lr, workdir)
    start = workdir / "quantized_start.pt"
    save_inference_checkpoint(start, run_cfg, task, model, plugins, roles={NAME: "model"})
    run_cfg.checkpoint.finetune_from = str(start)
    history = train(run_cfg, plugins)
    first, last = tenth_means(history["train_losses"])
    logger.info("fine-tuned %d modules for %d updates: mean train loss of the first tenth of the updates %.3f, "
                "of the last tenth %.3f", len(layout), updates, first, last)
    trained = history["model"].cpu().eval()
    freeze_centroids(trained)
    return trained


def tenth_means(losses: list[float]) -> tuple[float, float]:
    """The mean per-update loss over the first and the last tenth of the updates. One update's
    loss depends on its batch (batches group sentences of similar length), so comparing the first
    and last single updates says nothing about the trend."""
    k = max(1, len(losses) // 10)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def stage_config(cfg: DictConfig, layout: dict[str, str], updates: int, lr: float, workdir: Path) -> DictConfig:
    """The checkpoint's run config, set to fine-tune the quantized layout briefly in ``workdir``.

    The loss is the core's label-smoothed cross-entropy on the training data whatever the
    checkpoint was trained with: a distilled student's ``word_distill`` would need its teacher's
    file and plugin, and a fine-tuning of a few hundred updates only has to fit the data."""
    run_cfg = copy.deepcopy(cfg)
    OmegaConf.set_struct(run_cfg, False)
    run_cfg.criterion = {"_name": "label_smoothed_cross_entropy",
                         "label_smoothing": cfg.criterion.get("label_smoothing", 0.1)}
    run_cfg.plugins.options[NAME].quantized = layout
    run_cfg.checkpoint.save_dir = str(workdir)
    run_cfg.checkpoint.finetune_strict = True
    run_cfg.optimization.max_update = updates
    run_cfg.optimization.max_epoch = 0
    run_cfg.optimization.max_time_minutes = 0
    run_cfg.optim.lr = lr
    run_cfg.lr_scheduler = {"_name": "fixed", "warmup_updates": 0}
    run_cfg.common.tensorboard_dir = None
    run_cfg.common.device = "cpu"  # int8 modules run on the CPU only
    run_cfg.common.threads = torch.get_num_threads()  # toolkit-quantize --threads, not the training run's
    return run_cfg
