#!/usr/bin/env python
"""Kill a small training run with SIGKILL at random moments, rerun it each time, and check that
nothing is corrupt, lost, left behind or changed.

    python scripts/crash_trials.py [--trials 20] [--seed 0] [--workdir DIR]

It trains a tiny transformer on a small toy corpus through ``toolkit-train`` in subprocesses:
once without interruption (the reference), then again and again, each time killed at a random
moment and rerun (the rerun resumes), until ``--trials`` kills. A sixth of the kills fall in
start-up (data preparation, locking), a third on the first write (a new temporary file in the
run folder) after a random point of training, the rest at a random point of training. A rerun
that finishes before its kill completes a run: it is checked, and the next trial starts a new one.

Checked after every kill: each checkpoint file loads (``toolkit.checkpoint.load_checkpoint``).
Checked at the end of each completed run: no temporary file is left, the folder's lock is free,
the set of checkpoints matches the reference's (the same files, each holding the same update,
best metric and weights as the reference's file of that name), and the final state (weights,
optimizer, schedule) equals the reference's bit for bit (``torch.equal`` on every tensor).
Prints one summary line; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from toolkit.checkpoint import CheckpointError, load_checkpoint
from toolkit.data.toy_corpus import write_toy_corpus
from toolkit.locks import RUN_LOCK, is_locked

SETTINGS = [
    "task.source_lang=src", "task.target_lang=tgt", "task.splits=[train,valid]", "task.vocab_size=200",
    "model.encoder_layers=1", "model.decoder_layers=1", "model.encoder_embed_dim=32",
    "model.decoder_embed_dim=32", "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64",
    "dataset.max_positions=64", "dataset.max_tokens=512", "common.threads=1", "common.log_format=none",
    "common.tensorboard_dir=null", "optimization.max_epoch=3", "checkpoint.save_interval_updates=3",
    "checkpoint.keep_last_epochs=-1",
]
TEMPORARY = re.compile(r"\..+\.tmp\d+|.+\.tmp")  # toolkit.files' temporary names, old and new
MARKER = b" parameters; criterion "  # toolkit.train logs it once the model is built, just before training
COPY = re.compile(r"\.checkpoint(\d+|_best)\.pt\.tmp\d+")  # after checkpoint_last.pt, in the same save
STATE_KEYS = ("model", "optimizer", "lr_scheduler", "scaler", "num_updates", "iterator", "best_metric")


@dataclass
class Tally:
    """What the trials found."""

    trials: int = 0
    during_save: int = 0
    during_copy: int = 0  # of during_save: checkpoint_last.pt written, its epoch/best copies not (all)
    completed_runs: int = 0
    temporaries_seen: int = 0  # left by kills, to be removed by the next start
    corrupt: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    last_equal: bool = False  # the last completed run's final state equals the reference's


def run_training(save_dir: Path, data: Path, log: Path) -> subprocess.Popen:
    """Start ``toolkit-train`` on ``save_dir`` (resuming if it holds a checkpoint)."""
    command = [sys.executable, "-m", "toolkit.cli.train", *SETTINGS, f"task.data={data}",
               f"checkpoint.save_dir={save_dir}"]
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def temporaries(folder: Path) -> list[Path]:
    """Temporary files of writes under ``folder``."""
    return [p for p in folder.rglob("*.tmp*") if TEMPORARY.fullmatch(p.name)] if folder.exists() else []


@dataclass(frozen=True)
class Moment:
    """When to kill: ``delay`` s after the start ("startup") or after training began ("training"),
    or at the first write begun ``delay`` s after training began: any ("save"), or one of the
    epoch or best copies that follow ``checkpoint_last.pt`` at an epoch end ("copy")."""

    kind: str
    delay: float
    jitter: float = 0.0  # "save": kill this long after the temporary file appeared (mid-write or after)


def choose_moment(rng: random.Random, startup: float, training_left: float) -> Moment:
    """A random moment: a sixth in start-up (data preparation, locking), a quarter in a save,
    a sixth in the copies of an epoch end's save, the rest anywhere in the training left (the
    reference's training time less the share the run has done)."""
    draw, jitter = rng.random(), rng.choice([0.0, rng.uniform(0, 0.03)])
    if draw < 1 / 6:
        return Moment("startup", rng.uniform(0, startup))
    if draw < 5 / 12:
        return Moment("save", rng.uniform(0, training_left / 2), jitter)
    if draw < 7 / 12:
        return Moment("copy", rng.uniform(0, training_left / 2), jitter)
    return Moment("training", rng.uniform(0, training_left))


def _new_temporary(save_dir: Path, before: set[str], pattern: re.Pattern) -> str | None:
    try:
        return next((e.name for e in os.scandir(save_dir) if pattern.fullmatch(e.name) and e.name not in before),
                    None)
    except FileNotFoundError:
        return None


def _training_began(log: Path, offset: int) -> bool:
    with open(log, "rb") as f:
        f.seek(offset)
        return MARKER in f.read()


def kill_at(process: subprocess.Popen, moment: Moment, save_dir: Path, log: Path, offset: int) -> str | None:
    """SIGKILL ``process`` at ``moment``; what it was doing then, or None if it ended first."""
    before = {p.name for p in temporaries(save_dir)}  # a killed run's, removed by this one's start
    began = time.monotonic() if moment.kind == "startup" else None
    while process.poll() is None:
        if began is None and _training_began(log, offset):
            began = time.monotonic()
        writes = {"save": TEMPORARY, "copy": COPY}.get(moment.kind)
        writing = _new_temporary(save_dir, before, writes) if writes else None
        if began is not None and time.monotonic() >= began + moment.delay and (not writes or writing):
            time.sleep(moment.jitter)
            if process.poll() is not None:
                break
            process.send_signal(signal.SIGKILL)
            process.wait()
            if writing:
                return f"{moment.jitter * 1000:.0f} ms after {writing} appeared"
            return f"{moment.delay:.1f} s into {moment.kind}"
        time.sleep(0.0002 if writes and began is not None else 0.005)
    return None


def check_loadable(save_dir: Path, tally: Tally, when: str) -> None:
    """Every checkpoint file in ``save_dir`` loads."""
    for path in sorted(save_dir.glob("checkpoint*.pt")):
        try:
            load_checkpoint(path)
        except CheckpointError as error:
            tally.corrupt.append(f"{when}: {path.name}: {error}")


def tensors_equal(a: Any, b: Any) -> bool:
    """Whether two nested states are equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


def compare_with_reference(save_dir: Path, reference: Path, tally: Tally, when: str) -> bool:
    """The completed run's folder against the reference's; True if the final states are equal."""
    check_loadable(save_dir, tally, when)
    left = temporaries(save_dir)
    if left:
        tally.other.append(f"{when}: temporary files left: {[str(p.relative_to(save_dir)) for p in left]}")
    if is_locked(save_dir) or (save_dir / RUN_LOCK).exists():
        tally.other.append(f"{when}: the lock of {save_dir} is still held or its file remains")
    expected = sorted(p.name for p in reference.glob("checkpoint*.pt"))
    found = sorted(p.name for p in save_dir.glob("checkpoint*.pt"))
    tally.lost += [f"{when}: {name}" for name in sorted(set(expected) - set(found))]
    tally.other += [f"{when}: unexpected {name}" for name in sorted(set(found) - set(expected))]
    final_equal = True
    for name in sorted(set(expected) & set(found)):
        try:
            mine, theirs = load_checkpoint(save_dir / name), load_checkpoint(reference / name)
        except CheckpointError:
            continue  # counted as corrupt
        same = all(tensors_equal(mine.get(k), theirs.get(k)) for k in STATE_KEYS)
        if not same:
            tally.differing.append(f"{when}: {name} (update {mine.get('num_updates')} vs "
                                   f"{theirs.get('num_updates')})")
        if name == "checkpoint_last.pt":
            final_equal = same
    last = save_dir / "checkpoint_last.pt"
    return final_equal and last.exists()


def updates_done(save_dir: Path) -> int:
    """The updates ``checkpoint_last.pt`` in ``save_dir`` holds (0 if none)."""
    try:
        return int(load_checkpoint(save_dir / "checkpoint_last.pt")["num_updates"])
    except CheckpointError:
        return 0


def trial(moment: Moment, paths: dict[str, Path], tally: Tally) -> None:
    """Start (or resume) the run and kill it at ``moment``; a run that ends first is checked
    against the reference and the next trial starts a new one."""
    save_dir, log = paths["crashed"], paths["logs"] / "crashed.log"
    offset = log.stat().st_size if log.exists() else 0
    process = run_training(save_dir, paths["data"], log)
    killed = kill_at(process, moment, save_dir, log, offset)
    if killed:
        tally.trials += 1
        number = tally.trials
        tally.during_save += moment.kind in ("save", "copy")
        tally.during_copy += moment.kind == "copy"
        found = temporaries(save_dir)
        tally.temporaries_seen += len(found)
        check_loadable(save_dir, tally, f"after kill {number}")
        print(f"trial {number}: killed {killed}; {len(found)} temporary file(s) left for the next start",
              flush=True)
        return
    if process.returncode != 0:
        tally.other.append(f"after kill {tally.trials}: the run failed (exit code {process.returncode}, see {log})")
        return
    complete_run(save_dir, paths["reference"], tally, f"run {tally.completed_runs + 1}")
    print(f"a rerun finished before its kill: run {tally.completed_runs} checked; a new run starts", flush=True)


def complete_run(save_dir: Path, reference: Path, tally: Tally, when: str) -> bool:
    """Check a finished run against the reference, then clear its folder for a new run."""
    tally.completed_runs += 1
    equal = compare_with_reference(save_dir, reference, tally, when)
    if not equal:
        tally.other.append(f"{when}: final state differs from the reference")
    shutil.rmtree(save_dir)
    tally.last_equal = equal
    return equal


def prepare(workdir: Path) -> tuple[dict[str, Path], float, float]:
    """The toy corpus and the reference run; returns the paths and the reference's start-up
    and training durations."""
    paths = {name: workdir / name for name in ("data", "reference", "crashed", "logs")}
    for name in ("reference", "crashed", "logs"):
        shutil.rmtree(paths[name], ignore_errors=True)
    paths["logs"].mkdir(parents=True)
    write_toy_corpus(paths["data"], n_train=300, n_valid=40, n_test=0, seed=1)
    log = paths["logs"] / "reference.log"
    start = time.monotonic()
    process = run_training(paths["reference"], paths["data"], log)
    began = None
    while process.poll() is None:
        if began is None and _training_began(log, 0):
            began = time.monotonic()
        time.sleep(0.01)
    if process.returncode != 0 or began is None:
        sys.exit(f"the reference run failed: see {log}")
    return paths, began - start, time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="kills (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crash_trials."))
    paths, startup, training = prepare(workdir)
    print(f"reference run: {startup:.1f} s start-up, {training:.1f} s training; {args.trials} trials follow",
          flush=True)
    rng, tally = random.Random(args.seed), Tally()
    for _ in range(3 * args.trials):  # a rerun that finishes before its kill counts as no trial
        if tally.trials == args.trials:
            break
        done = updates_done(paths["crashed"]) / updates_done(paths["reference"])
        left = training * max(1 - done, 1 / 4)  # a finished run still validates, saves, repairs its set
        trial(choose_moment(rng, startup, left), paths, tally)
    final_equal = tally.last_equal
    if paths["crashed"].exists():  # killed last: finish it
        process = run_training(paths["crashed"], paths["data"], paths["logs"] / "crashed.log")
        if process.wait() != 0:
            tally.other.append(f"the final rerun failed (see {paths['logs'] / 'crashed.log'})")
            final_equal = False
        else:
            final_equal = complete_run(paths["crashed"], paths["reference"], tally, "final run")
    report(tally, final_equal)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if final_equal and not (tally.corrupt or tally.lost or tally.differing or tally.other) else 1


def report(tally: Tally, final_equal: bool) -> None:
    """Print what failed, then the summary line."""
    for kind in ("corrupt", "lost", "differing", "other"):
        for line in getattr(tally, kind):
            print(f"{kind}: {line}")
    print(f"{tally.trials} trials ({tally.during_save} killed during a save, {tally.during_copy} of them between "
          f"checkpoint_last.pt and its copies; {tally.temporaries_seen} temporary files left by kills; "
          f"{tally.completed_runs} completed runs compared), "
          f"{len(tally.corrupt) + len(tally.lost)} corrupt or lost files, "
          f"{len(tally.differing)} differing, final weights bit-identical: {'yes' if final_equal else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
