"""Reliability of a run folder: one live process per folder (run and data locks), no temporary
file left behind, and a consistent set of checkpoints after a kill between the writes of a save."""

import errno
import logging
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

from toolkit.checkpoint import load_checkpoint
from toolkit.config import compose_train_config
from toolkit.data.preprocess import PreprocessSettings, preprocess
from toolkit.data.toy_corpus import write_toy_corpus
from toolkit.locks import DATA_LOCK, RUN_LOCK, FolderLockedError, folder_lock, is_locked
from toolkit.training import checkpoint as checkpoint_module
from toolkit.training.run_folder import hold_run_folder
from toolkit.training.train import train

TINY = [
    "task.source_lang=src", "task.target_lang=tgt", "task.splits=[train,valid]", "task.vocab_size=200",
    "model.encoder_layers=1", "model.decoder_layers=1", "model.encoder_embed_dim=32",
    "model.decoder_embed_dim=32", "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64",
    "dataset.max_tokens=512", "dataset.max_positions=64", "common.log_format=none",
    "common.tensorboard_dir=null",
]

HOLDER = """
import sys
from toolkit.locks import folder_lock
with folder_lock(sys.argv[1], sys.argv[2], sys.argv[3]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills this process)
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small parallel text folder and its binarized form, shared by this module's runs."""
    root = tmp_path_factory.mktemp("data")
    text = write_toy_corpus(root / "text", n_train=150, n_valid=20, n_test=0, seed=3)
    return ["task.data=" + str(text), "task.destdir=" + str(root / "bin")]


def config(save_dir, data, *overrides):
    return compose_train_config([*TINY, *data, f"checkpoint.save_dir={save_dir}", *overrides])


class _Holder:
    """Another process holding ``folder/name``."""

    def __init__(self, folder, name=RUN_LOCK, purpose="training"):
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), name, purpose],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "held"

    def release(self):
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process.stdin.close()


def _temporaries(folder):
    return sorted(p.name for p in folder.rglob("*.tmp*"))


def test_a_second_run_on_a_held_folder_fails_at_once_naming_the_holder_and_touches_nothing(tmp_path, data):
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    (save_dir / "checkpoint_last.pt").write_bytes(b"the first run's")
    holder = _Holder(save_dir)
    try:
        with pytest.raises(FolderLockedError) as error:
            train(config(save_dir, data, "optimization.max_update=1"))
        message = str(error.value)
        assert str(save_dir) in message and f"process {holder.process.pid} on " in message
        assert sorted(p.name for p in save_dir.iterdir()) == [RUN_LOCK, "checkpoint_last.pt"]  # no config.yaml
        assert (save_dir / "checkpoint_last.pt").read_bytes() == b"the first run's"
        assert is_locked(save_dir)
    finally:
        holder.release()
    assert not is_locked(save_dir) and not (save_dir / RUN_LOCK).exists()


def test_toolkit_train_on_a_held_folder_prints_one_line_and_writes_no_log_there(tmp_path, data):
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    for name, text in (("config.yaml", "the first run's\n"), ("train.log", "the first run's log\n")):
        (save_dir / name).write_text(text)
    holder = _Holder(save_dir)
    try:
        second = subprocess.run([sys.executable, "-m", "toolkit.cli.train", *TINY, *data,
                                 f"checkpoint.save_dir={save_dir}"], capture_output=True, text=True, timeout=300)
        assert second.returncode == 1, second.stderr
        assert f"{save_dir} is in use: process {holder.process.pid} on " in second.stderr
        assert "Traceback" not in second.stderr
        assert sorted(p.name for p in save_dir.iterdir()) == [RUN_LOCK, "config.yaml", "train.log"]  # no .hydra
        assert (save_dir / "train.log").read_text() == "the first run's log\n"
    finally:
        holder.release()


def test_a_dead_owners_lock_is_taken_over_with_a_message(tmp_path, data, caplog):
    save_dir = tmp_path / "run"
    holder = _Holder(save_dir)
    holder.kill()  # SIGKILL: the kernel frees the lock; the file still names the dead owner
    assert (save_dir / RUN_LOCK).exists() and not is_locked(save_dir)
    with caplog.at_level(logging.WARNING, logger="toolkit.locks"):
        result = train(config(save_dir, data, "optimization.max_update=1"))
    assert result["num_updates"] == 1
    assert f"process {holder.process.pid} on " in caplog.text and "taking over" in caplog.text
    assert not (save_dir / RUN_LOCK).exists()


def test_only_rank_0_takes_the_run_lock(tmp_path):
    holder = _Holder(tmp_path)
    try:
        with hold_run_folder(tmp_path, master=False):  # another rank of the holder's run
            pass
        with pytest.raises(FolderLockedError):
            with hold_run_folder(tmp_path, master=True):
                pass
    finally:
        holder.release()


def test_a_second_preparer_of_a_destdir_waits_for_the_first_saying_whom_it_waits_for(tmp_path, caplog):
    text = write_toy_corpus(tmp_path / "text", n_train=50, n_valid=5, n_test=0, seed=1)
    settings = PreprocessSettings("src", "tgt", ("train", "valid"), "pretokenized", 100, True, "unigram",
                                  1.0, 1, 1)
    destdir = tmp_path / "bin"
    holder = _Holder(destdir, DATA_LOCK, "preparing data")
    release = threading.Timer(1.0, holder.release)
    release.start()
    try:
        with caplog.at_level(logging.WARNING, logger="toolkit.locks"):
            preprocess(text, destdir, settings, lock_wait_s=60)
    finally:
        release.join()
    assert f"waiting for process {holder.process.pid} on " in caplog.text and "preparing data" in caplog.text
    assert (destdir / "manifest.json").exists() and not (destdir / DATA_LOCK).exists()


def test_a_preparer_that_cannot_wait_fails_naming_the_holder(tmp_path):
    holder = _Holder(tmp_path, DATA_LOCK, "preparing data")
    try:
        for wait_s, said in ((0, "is in use:"), (0.5, r"is in use after waiting [\d.]+ s:")):
            with pytest.raises(FolderLockedError, match=f"{said} process {holder.process.pid} on .*preparing data"):
                with folder_lock(tmp_path, DATA_LOCK, "preparing data", wait_s=wait_s):
                    pass
    finally:
        holder.release()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_starting_run_removes_stale_temporary_files_and_says_so(tmp_path, data, caplog):
    save_dir, destdir = tmp_path / "run", tmp_path / "bin"
    save_dir.mkdir()
    dead, live = _dead_pid(), os.getppid()
    stale = [save_dir / f".checkpoint_last.pt.tmp{dead}", save_dir / "config.yaml.tmp",
             destdir / f".train.src.bin.tmp{dead}"]
    destdir.mkdir()
    for path in stale:
        path.write_bytes(b"x" * 1234)
    kept = save_dir / f".checkpoint_best.pt.tmp{live}"  # a live process's write in progress
    kept.write_bytes(b"y")
    with caplog.at_level(logging.WARNING, logger="toolkit.files"):
        train(config(save_dir, data, "optimization.max_update=1", f"task.destdir={destdir}"))
    assert not any(path.exists() for path in stale) and kept.exists()
    for path in stale:
        assert f"{path.name} (1234 bytes)" in caplog.text


def test_a_save_failing_mid_write_leaves_no_temporary_file_and_the_next_run_starts(tmp_path, data, monkeypatch):
    real_save = torch.save

    def full_disk(state, f, *args, **kwargs):
        f.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    cfg = config(tmp_path, data, "optimization.max_update=4", "checkpoint.save_interval_updates=2")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        train(cfg)
    assert _temporaries(tmp_path) == [] and not is_locked(tmp_path) and not (tmp_path / RUN_LOCK).exists()
    monkeypatch.setattr(torch, "save", real_save)
    assert train(cfg)["num_updates"] == 4
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["num_updates"] == 4


class _Killed(BaseException):
    """Stands for a SIGKILL: nothing catches it."""


def test_a_kill_between_the_writes_of_a_save_is_repaired_on_resume(tmp_path, data, monkeypatch):
    real_write = checkpoint_module.atomic_write_with  # writes the epoch and best copies of checkpoint_last

    def killed_at_epoch_2(path, write, **kwargs):
        if os.path.basename(path) == "checkpoint2.pt":
            raise _Killed
        return real_write(path, write, **kwargs)

    cfg = config(tmp_path, data, "optimization.max_epoch=2")
    monkeypatch.setattr(checkpoint_module, "atomic_write_with", killed_at_epoch_2)
    with pytest.raises(_Killed):
        train(cfg)
    last = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert not (tmp_path / "checkpoint2.pt").exists()
    monkeypatch.setattr(checkpoint_module, "atomic_write_with", real_write)
    train(cfg)  # resumes at the end of epoch 2: nothing left to train, the set is completed
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["num_updates"] == last["num_updates"]
    epoch2, best = (load_checkpoint(tmp_path / name) for name in ("checkpoint2.pt", "checkpoint_best.pt"))
    assert epoch2["num_updates"] == last["num_updates"]
    assert best["best_metric"] == last["best_metric"]
    if last.get("saved_as", {}).get("best"):
        assert best["num_updates"] == last["num_updates"]
    assert all(torch.equal(epoch2["model"][k], last["model"][k]) for k in last["model"])
