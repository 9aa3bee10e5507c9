"""Reporting decoding runs: speed (sentences/s, target tokens/s, wall time, peak memory), the
test-set options of the results scripts, and their results file."""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from toolkit.files import atomic_write_text


@dataclass
class SpeedMeter:
    device: torch.device
    sentences: int = 0
    tokens: int = 0
    seconds: float = 0.0
    _start: float = field(default=0.0, repr=False)

    def __enter__(self) -> "SpeedMeter":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - self._start

    def add(self, translations) -> None:
        self.sentences += len(translations)
        self.tokens += sum(len(t.hypotheses[0].tokens) for t in translations if t.hypotheses)

    def peak_memory_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def summary(self) -> str:
        seconds = max(self.seconds, 1e-9)
        memory = "peak GPU memory" if self.device.type == "cuda" else "peak RSS"
        return (f"translated {self.sentences} sentences ({self.tokens} target tokens) in {self.seconds:.2f} s: "
                f"{self.sentences / seconds:.1f} sentences/s, {self.tokens / seconds:.1f} tokens/s, "
                f"{memory} {self.peak_memory_mib():.0f} MiB")


def decode_alternately(runs: Mapping[str, Any], sources: Sequence[str], rounds: int) -> dict[str, dict]:
    """Decode ``sources`` with each translator of ``runs`` in turn, ``rounds`` times, so that
    machine drift hits all alike (after one untimed warm-up batch each).

    :return: ``{name: {"seconds", "tokens", "sentences", "outputs"}}``, times and counts summed
        over the rounds, ``outputs`` the last round's hypotheses.
    """
    totals = {name: {"seconds": 0.0, "tokens": 0, "sentences": 0, "outputs": []} for name in runs}
    for translator in runs.values():  # warm-up, a batch for each decoding process
        translator.translate(sources[: translator.max_sentences * getattr(translator, "workers", 1)])
    for _ in range(rounds):
        for name, translator in runs.items():
            meter = SpeedMeter(translator.device)
            with meter:
                translations = translator.translate(sources)
            meter.add(translations)
            totals[name]["outputs"] = [t.text for t in translations]
            totals[name]["seconds"] += meter.seconds
            totals[name]["tokens"] += meter.tokens
            totals[name]["sentences"] += meter.sentences
    return totals


def add_test_set_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a results script that decodes a test set: ``--data`` (a folder with
    SPLIT.SRC and SPLIT.TGT), ``--split``, ``--source-lang``, ``--target-lang``, ``--batch``,
    ``--limit`` and ``--threads``; ``read_test_set`` reads what they name."""
    parser.add_argument("--data", type=Path, required=True, help="folder with SPLIT.SRC and SPLIT.TGT")
    parser.add_argument("--split", default="test")
    parser.add_argument("--source-lang", default="de")
    parser.add_argument("--target-lang", default="en")
    parser.add_argument("--batch", type=int, default=64, help="sentences per batch")
    parser.add_argument("--limit", type=int, help="only the first N sentences (a quick look; tables use all)")
    parser.add_argument("--threads", type=int)


def read_test_set(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Sources and references of ``add_test_set_arguments``' options (``--threads`` applied)."""
    from toolkit.data.preprocess import read_lines

    if args.threads:
        torch.set_num_threads(args.threads)
    sources = read_lines(args.data / f"{args.split}.{args.source_lang}")[: args.limit]
    references = read_lines(args.data / f"{args.split}.{args.target_lang}")[: args.limit]
    return sources, references


def write_results(path: Path, args: argparse.Namespace, **results: Any) -> None:
    """Write a results script's JSON file (its plot's input) atomically: the test split, batch
    and threads of ``add_test_set_arguments``' options, then ``results`` (settings and rows)."""
    header = {"split": args.split, "batch": args.batch, "threads": torch.get_num_threads()}
    atomic_write_text(path, json.dumps({**header, **results}, indent=1))
