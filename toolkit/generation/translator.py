"""Text in, text out: a trained checkpoint, its tokenizers and a generator, batched."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from toolkit.generation.generator import GenerationConfig, Hypothesis, SequenceGenerator
from toolkit.generation.workers import WorkerPool, check_workers
from toolkit.inference import checkpoint_paths, load_ensemble_for_inference
from toolkit.models.ensemble import refuse_exit_policy
from toolkit.plugins import PluginSession, get_plugins
from toolkit.registry import to_dataclass

logger = logging.getLogger(__name__)


@dataclass
class Translation:
    source: str
    text: str  # the best hypothesis, detokenized
    hypotheses: list[Hypothesis]


class Translator:
    """Translates lines in batches of similar length and returns them in input order.

    Empty lines give empty translations; lines longer than the model's source positions are
    cut (and counted in the log); a high rate of unknown pieces is warned about.

    ``workers`` > 1 (CPU only): the batches are decoded by that many forked processes
    (``toolkit.generation.workers``), ``torch.get_num_threads() // workers`` threads each (at
    least 1), started at the first ``translate`` and stopped by ``close``.
    """

    def __init__(self, task, model, gen_cfg: GenerationConfig, plugins: PluginSession | None = None,
                 max_sentences: int = 64, max_tokens: int = 16000, workers: int = 1):
        plugins = plugins or get_plugins()
        self.task, self.model = task, model
        self.device = next(model.parameters()).device
        search = plugins.registries.search.build(gen_cfg.search)
        refuse_exit_policy(model, gen_cfg.exit_policy)  # before the policy is built for one model's blocks
        policy = plugins.registries.exit_policy.build(gen_cfg.exit_policy, model) if gen_cfg.exit_policy else None
        self.generator = SequenceGenerator(model, task.tgt_dict, gen_cfg, search, policy)
        self.max_sentences, self.max_tokens = max_sentences, max_tokens
        check_workers(workers, self.device)
        self.workers, self._pool = workers, None

    @classmethod
    def from_checkpoint(cls, path: str | Path | Sequence[str | Path], gen_cfg: GenerationConfig | None = None,
                        device: str = "auto", plugins: PluginSession | None = None,
                        plugin_options: Mapping[str, Any] | None = None, precision: str = "fp32",
                        **kwargs: Any) -> "Translator":
        """A translator for checkpoint ``path``, or for an ensemble of several (a list, or
        ``"a.pt:b.pt"``; ``toolkit.inference.checkpoint_paths``). See
        ``toolkit.inference.load_for_inference`` for ``device``, ``plugin_options`` and
        ``precision``; ``kwargs`` go to the constructor."""
        _, task, model, _ = load_ensemble_for_inference(checkpoint_paths(path), plugins, device, plugin_options,
                                                        precision)
        return cls(task, model, gen_cfg or GenerationConfig(), plugins, **kwargs)

    def translate(self, lines: Sequence[str]) -> list[Translation]:
        ids = self.task.src_tokenizer.encode([line.strip() for line in lines])
        max_source = self.model.max_positions()[0] - 1  # room for </s>
        too_long = sum(len(s) > max_source for s in ids)
        if too_long:
            logger.warning("%d source lines are longer than the model's %d positions: cut to fit",
                           too_long, max_source)
        ids = [s[:max_source] for s in ids]
        self._warn_unknown(ids)
        results: list[Translation | None] = [None] * len(lines)
        order = sorted((i for i in range(len(lines)) if ids[i]), key=lambda i: len(ids[i]))
        batches = self._batches(order, ids)
        if self.workers > 1:  # the longest first: the last batches handed out are the quickest
            batches.reverse()
        tensors = (self._collate([ids[i] for i in batch]) for batch in batches)
        decoded = self._worker_pool().generate(tensors) if self.workers > 1 else (
            self.generator.generate(*pair) for pair in tensors)
        for batch, batch_hyps in zip(batches, decoded):
            for i, hyps in zip(batch, batch_hyps):
                text = self.task.tgt_tokenizer.decode(hyps[0].tokens.tolist()) if hyps else ""
                results[i] = Translation(lines[i], text, hyps)
        return [r if r is not None else Translation(lines[i], "", []) for i, r in enumerate(results)]

    def _worker_pool(self):
        if self._pool is None or self._pool.broken:
            self._pool = WorkerPool(self.generator, self.workers, max(1, torch.get_num_threads() // self.workers))
        return self._pool

    def close(self) -> None:
        """Stop the decoding workers, if any (a later ``translate`` starts new ones)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _batches(self, order: list[int], ids: list[list[int]]) -> list[list[int]]:
        batches, batch = [], []
        for i in order:  # sorted by length: the last member is the longest
            if batch and (len(batch) == self.max_sentences or (len(batch) + 1) * (len(ids[i]) + 1) > self.max_tokens):
                batches.append(batch)
                batch = []
            batch.append(i)
        return batches + ([batch] if batch else [])

    def _collate(self, sources: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.task.src_dict
        lengths = torch.tensor([len(s) + 1 for s in sources])
        tokens = torch.full((len(sources), int(lengths.max())), d.pad, dtype=torch.long)
        for row, s in enumerate(sources):
            tokens[row, : len(s)] = torch.tensor(s, dtype=torch.long)
            tokens[row, len(s)] = d.eos
        return tokens.to(self.device), lengths.to(self.device)

    def _warn_unknown(self, ids: list[list[int]]) -> None:
        unk = self.task.src_dict.unk
        total = sum(len(s) for s in ids)
        rate = sum(s.count(unk) for s in ids) / max(total, 1)
        if rate > 0.05:
            logger.warning("%.0f%% of the source pieces are unknown to the model's vocabulary: is this the "
                           "source language it was trained on?", 100 * rate)


def generation_config(cfg: Any) -> GenerationConfig:
    """A ``GenerationConfig`` from a DictConfig/dict section (search stays a plain dict)."""
    if isinstance(cfg, GenerationConfig):
        return cfg
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return to_dataclass(plain, GenerationConfig)
