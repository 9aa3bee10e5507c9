"""Decoding on several CPU processes, each with its own threads (CTranslate2's ``inter_threads``
x ``intra_threads``).

One decoding step is a few hundred small operations. With two threads each product splits in
two, but the small ones do not halve (an int8 product gains 4-20% from a second thread,
float32's about 1.9x: ``docs/DESIGN.md``, "Two cores decode as two processes"), and
Python's share of a step is not split at all. Python threads cannot decode batches side by side
(the beam search holds the interpreter lock between operations), so ``WorkerPool`` forks
processes: they share the loaded model's memory (copy on write), each decodes whole batches
with ``threads`` threads, and the batches come back in order, so the output is the same as one
process's (int8's activation scales are per batch, and the batches are the same).
"""

from __future__ import annotations

import multiprocessing
import weakref
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

import torch

from toolkit.errors import ConfigError

_GENERATOR = None  # the generator a worker decodes with (set in the worker: forked, not pickled)


def check_workers(workers: int, device: torch.device | str = "cpu") -> None:
    """A clear error unless ``workers`` decoding processes can run for a model on ``device``."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if workers > 1 and torch.device(device).type != "cpu":
        raise ConfigError(f"decoding workers run on the CPU; the model is on {device} (use workers=1)")
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        raise ConfigError("decoding workers need the fork start method, which this platform lacks (use workers=1)")


def _start_worker(generator, threads: int) -> None:
    global _GENERATOR
    _GENERATOR = generator
    torch.set_num_threads(threads)


def _decode(batch: tuple[torch.Tensor, torch.Tensor]):
    """One batch in a worker: its hypotheses and what the generator counted while decoding it."""
    generator = _GENERATOR
    counts, rows = generator.exit_counts.clone(), generator.projected_rows
    hypotheses = generator.generate(*batch)
    return hypotheses, generator.exit_counts - counts, generator.projected_rows - rows


class WorkerPool:
    """``workers`` forked processes decoding with ``generator`` (a ``SequenceGenerator`` on the
    CPU), ``threads`` threads each. The exit statistics they count are added to ``generator``'s,
    so averages and histograms read as after decoding in this process."""

    def __init__(self, generator, workers: int, threads: int):
        if workers < 2:
            raise ConfigError(f"a worker pool needs at least 2 workers, got {workers}")
        if threads < 1:
            raise ConfigError(f"each worker needs at least 1 thread, got {threads}")
        check_workers(workers, next(generator.model.parameters()).device)
        self._pool = ProcessPoolExecutor(workers, multiprocessing.get_context("fork"), _start_worker,
                                         (generator, threads))  # forked at the first batch: the model as it is then
        self.generator, self.workers, self.threads = generator, workers, threads
        self.broken = False  # a worker died: the pool is closed, and a translator starts another
        self._closer = weakref.finalize(self, self._pool.shutdown, cancel_futures=True)

    def generate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[list]:
        """Each batch's hypotheses (``SequenceGenerator.generate``'s), in the batches' order;
        the workers take the next batch as they finish one.

        :raises RuntimeError: a worker died (killed, out of memory): the pool cannot go on.
        """
        try:
            for hypotheses, counts, rows in self._pool.map(_decode, batches):
                self.generator.exit_counts += counts
                self.generator.projected_rows += rows
                yield hypotheses
        except BrokenProcessPool as error:
            self.broken = True
            self.close()
            raise RuntimeError(f"a decoding worker process died ({error}): run again, with fewer workers if "
                               f"memory is short") from None

    def close(self) -> None:
        """Stop the workers (also done when the pool is garbage-collected or the program exits)."""
        self._closer()
