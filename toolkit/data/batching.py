"""Token-budget batching with length bucketing, and the resumable epoch iterator."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

import numpy as np
import torch

from toolkit.data.language_pair_dataset import LanguagePairDataset


def batch_by_size(order: np.ndarray, num_tokens: np.ndarray, max_tokens: int,
                  max_sentences: int | None = None) -> list[np.ndarray]:
    """Cut ``order`` into consecutive batches of at most ``max_tokens`` padded tokens.

    A batch's cost is rows x its longest member, so sorting ``order`` by length first
    (bucketing) keeps padding low. ``num_tokens[i]`` is pair i's longer side.
    """
    batches, start, longest = [], 0, 0
    for pos, index in enumerate(order):
        size = int(num_tokens[index])
        if size > max_tokens:
            raise ValueError(f"pair {index} has {size} tokens, more than max_tokens={max_tokens}")
        rows = pos - start
        new_longest = max(longest, size)
        full = new_longest * (rows + 1) > max_tokens or (max_sentences is not None and rows == max_sentences)
        if rows > 0 and full:
            batches.append(order[start:pos])
            start, new_longest = pos, size
        longest = new_longest
    if start < len(order):
        batches.append(order[start:])
    return batches


class EpochBatchIterator:
    """Batches of a dataset, epoch after epoch, reproducible from ``(seed, epoch)``.

    Each epoch visits every kept pair exactly once. With ``shuffle``, pairs are sorted by
    length with seeded random tie-breaking (bucketing) and the batch order is shuffled. The
    position (``epoch``, ``iterations_in_epoch``) is what a checkpoint stores to resume.
    ``shard`` (rank, world size) gives each data-parallel worker every world-th batch; in
    training (``shuffle``) the last few batches are dropped so every rank gets as many, in
    evaluation every batch is kept.
    """

    def __init__(self, dataset: LanguagePairDataset, max_tokens: int, max_sentences: int | None = None,
                 seed: int = 1, shuffle: bool = True, bucket_by_length: bool = True,
                 num_workers: int = 1, shard: tuple[int, int] = (0, 1), pin_memory: bool = False):
        self.dataset = dataset
        self.max_tokens, self.max_sentences = max_tokens, max_sentences
        self.seed, self.shuffle, self.bucket = seed, shuffle, bucket_by_length
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.rank, self.world_size = shard
        self.num_tokens = np.maximum(dataset.src_sizes, dataset.tgt_sizes)  # (N,)
        self.epoch = 1  # the epoch the next call to next_epoch_itr() starts or resumes
        self.iterations_in_epoch = 0
        self._resume_offset = 0

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches (arrays of pair indices) of ``epoch``, in iteration order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = self.dataset.indices
        if self.shuffle:
            order = order[rng.permutation(len(order))]
        if self.bucket:  # stable sort: equal lengths keep their random order
            order = order[np.lexsort((self.dataset.src_sizes[order], self.dataset.tgt_sizes[order]))]
        batches = batch_by_size(order, self.num_tokens, self.max_tokens, self.max_sentences)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.world_size > 1:
            usable = len(batches) - len(batches) % self.world_size if self.shuffle else len(batches)
            batches = batches[self.rank : usable : self.world_size]
        return batches

    def __len__(self) -> int:
        return len(self.batches(self.epoch))

    def next_epoch_itr(self) -> Iterator[dict[str, Any]]:
        """Collated batches of the current epoch, from where a checkpoint left off."""
        epoch, batches = self.epoch, self.batches(self.epoch)
        total, batches = len(batches), batches[self._resume_offset :]
        self.iterations_in_epoch = self._resume_offset
        self._resume_offset = 0
        samples = (self.dataset.collate(b) for b in batches)
        if self.pin_memory:  # page-locked, so the trainer's non-blocking copies to the GPU overlap
            samples = (map_tensors(sample, torch.Tensor.pin_memory) for sample in samples)
        if self.num_workers > 0:
            samples = _prefetch(samples, depth=4 * self.num_workers)
        try:
            for sample in samples:
                self.iterations_in_epoch += 1
                yield sample
        finally:  # a consumer that stops early (max_update, a signal) also stops the producer thread
            samples.close()
            if self.iterations_in_epoch == total:  # every batch taken: the epoch is over, however it stopped
                self.epoch, self.iterations_in_epoch = epoch + 1, 0

    def end_of_epoch(self) -> bool:
        return self.iterations_in_epoch == 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "iterations_in_epoch": self.iterations_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.iterations_in_epoch = self._resume_offset = int(state["iterations_in_epoch"])


def map_tensors(sample: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``sample`` with ``fn`` applied to every tensor in it (through nested dicts)."""
    if isinstance(sample, torch.Tensor):
        return fn(sample)
    if isinstance(sample, dict):
        return {key: map_tensors(value, fn) for key, value in sample.items()}
    return sample


_DONE = object()


def _prefetch(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """Produce ``items`` in a background thread, ``depth`` ahead of the consumer.

    Closing the generator joins the thread. A daemon thread left running torch code when the
    interpreter exits is torn down mid-operator, which aborts the process ("terminate called
    without an active exception") after its work is done.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        """Block until ``item`` is queued; False once the consumer has gone away."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # surfaced in the consumer
            put(error)
            return
        put(_DONE)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()

