"""What a run reports: summed metrics, log lines or a progress bar, tensorboard scalars."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable, Iterable, Iterator

import torch

logger = logging.getLogger("toolkit.train")


class Meter:
    """Sums logging outputs (tensors stay on their device until read: no per-step sync)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Any] = {}
        self.count = 0
        self.start = time.perf_counter()

    def add(self, logging_output: dict[str, Any]) -> None:
        self.count += 1
        for key, value in logging_output.items():
            self.sums[key] = self.sums.get(key, 0) + (value.detach() if torch.is_tensor(value) else value)

    def totals(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.sums.items()}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


class Reporter:
    """Log lines (or a tqdm bar on a terminal) and tensorboard scalars."""

    def __init__(self, log_format: str, tensorboard_dir: str | None):
        if log_format == "auto":
            log_format = "tqdm" if sys.stderr.isatty() else "simple"
        self.log_format = log_format
        self.writer = None
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(tensorboard_dir)

    def iterate(self, items: Iterable[Any], total: int, epoch: int) -> Iterator[Any]:
        if self.log_format != "tqdm":
            return iter(items)
        from tqdm import tqdm

        return iter(tqdm(items, total=total, desc=f"epoch {epoch:03d}", leave=False, dynamic_ncols=True))

    def log(self, tag: str, stats: dict[str, float], step: int) -> None:
        if self.log_format != "none":
            text = " | ".join(f"{k} {_fmt(v)}" for k, v in stats.items())
            logger.info("%s | %s", tag, text)
        if self.writer is not None:
            for key, value in stats.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "num_updates"):
                    self.writer.add_scalar(f"{tag}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}"
    return str(value)


def summarize(meter: Meter, reduce: Callable[[dict[str, float]], dict[str, float]]) -> dict[str, float]:
    """Metrics per token plus throughput for the meter's window."""
    totals = meter.totals()
    stats = reduce(totals)
    if meter.count:
        for key in ("lr", "grad_norm"):
            if key in totals:
                stats[key] = totals[key] / meter.count
        elapsed = max(meter.elapsed(), 1e-9)
        stats["tgt_tokens_per_s"] = totals.get("ntokens", 0) / elapsed
    return stats
