"""Failing console commands: one line for a user's mistake, a traceback for a bug, and the
checks toolkit-generate makes before it loads a model."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from toolkit.cli import generate as generate_module
from toolkit.cli import reporting_errors
from toolkit.cli.generate import generate
from toolkit.config import ConfigError, compose_train_config
from toolkit.data.preprocess import DataError
from toolkit.training.train import train

from tests.training.tiny import tiny_config

BIN = Path(sys.executable).parent


def run(*args, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, timeout=300, env=env, **kwargs)


# --- one line for user errors, a traceback for bugs ---------------------------------------------


@pytest.mark.parametrize("error", [ConfigError("optim.lr must be positive"), FileNotFoundError("no such file x")])
def test_a_user_error_is_one_line_and_exit_status_1(error, capsys):
    with pytest.raises(SystemExit) as exit_:
        with reporting_errors("toolkit-x"):
            raise error
    assert exit_.value.code == 1
    assert capsys.readouterr().err == f"toolkit-x: {type(error).__name__}: {error}\n"


def test_a_bug_keeps_its_traceback(capsys):
    with pytest.raises(ZeroDivisionError):
        with reporting_errors("toolkit-x"):
            1 / 0
    assert capsys.readouterr().err == ""


def test_toolkit_train_with_a_bad_value_prints_one_line_and_creates_no_folder(tmp_path):
    result = run("toolkit-train", "optim.lr=inf", f"checkpoint.save_dir={tmp_path / 'run'}", cwd=tmp_path, text=True)
    assert result.returncode == 1
    assert result.stderr == "toolkit-train: ConfigError: invalid config:\n  optim.lr must be a finite number, got inf\n"
    assert list(tmp_path.iterdir()) == []  # no run folder, no .hydra/ or train.log anywhere


def test_toolkit_train_on_undecodable_text_names_file_and_line_and_creates_no_folder(tmp_path):
    cfg = tiny_config(tmp_path)
    train_src = tmp_path / "text" / "train.src"
    train_src.write_bytes(train_src.read_bytes().replace(b"\n", b"\n\xff", 1))
    result = run("toolkit-train", *[f"{key}={OmegaConf.select(cfg, key)}" for key in (
        "task.data", "task.source_lang", "task.target_lang", "checkpoint.save_dir")], cwd=tmp_path, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith(f"toolkit-train: DataError: {train_src} line 2 is not UTF-8 text (byte 0xff at "
                                    f"column 1)"), result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


# --- toolkit-generate checks every path before it loads the model -------------------------------


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if generate reads the checkpoint (or builds its model)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint was read")

    monkeypatch.setattr(generate_module, "load_checked", refuse, raising=False)
    monkeypatch.setattr(generate_module, "load_ensemble_for_inference", refuse)


def generate_config(*overrides):
    return compose_train_config(list(overrides), config_name="generate")


@pytest.fixture
def checkpoint_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"never read")
    return path


@pytest.mark.parametrize("output, message", [
    ("no_such_dir/out.txt", "folder no_such_dir does not exist"), (".", "is a folder"),
])
def test_a_bad_output_path_is_refused_before_the_model_is_loaded(checkpoint_file, tmp_path, monkeypatch, no_model,
                                                                  output, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_text("a b c\n")
    for inputs in (["input=in.txt"], ["split=test"]):
        with pytest.raises(ConfigError, match=message):
            generate(generate_config(f"path={checkpoint_file}", *inputs, f"output={output}"))


def test_missing_input_and_reference_files_are_refused_before_the_model_is_loaded(checkpoint_file, tmp_path,
                                                                                  no_model):
    (tmp_path / "in.txt").write_text("a b c\n")
    with pytest.raises(FileNotFoundError, match=r"source file .*nope\.txt does not exist"):
        generate(generate_config(f"path={checkpoint_file}", f"input={tmp_path / 'nope.txt'}"))
    with pytest.raises(FileNotFoundError, match=r"reference file .*ref\.txt does not exist"):
        generate(generate_config(f"path={checkpoint_file}", f"input={tmp_path / 'in.txt'}",
                                 f"reference={tmp_path / 'ref.txt'}"))
    (tmp_path / "bad.txt").write_bytes(b"fine\n\xc3(\n")
    with pytest.raises(DataError, match=r"bad\.txt line 2 is not UTF-8 text \(byte 0xc3 at column 1\)"):
        generate(generate_config(f"path={checkpoint_file}", f"input={tmp_path / 'bad.txt'}"))


def test_missing_split_files_are_refused_before_the_model_is_built(tmp_path, monkeypatch):
    cfg = compose_train_config([f"task.data={tmp_path / 'text'}", "task.source_lang=de", "task.target_lang=en"])
    path = tmp_path / "model.pt"
    torch.save({"cfg": OmegaConf.to_container(cfg, resolve=True), "model": {}}, path)

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(generate_module, "load_ensemble_for_inference", refuse)
    with pytest.raises(FileNotFoundError, match=rf"split 'test': source file {tmp_path / 'text' / 'test.de'} does"):
        generate(generate_config(f"path={path}", "split=test"))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    train(tiny_config(folder, "optimization.max_update=2"))
    return folder / "run" / "checkpoint_last.pt"


def test_the_output_is_written_atomically(tiny_checkpoint, tmp_path, monkeypatch):
    (tmp_path / "in.txt").write_text("the dog sleeps\nthe cats see a dog\n")
    out = tmp_path / "out.txt"
    out.write_text("previous output\n")

    def interrupted(fd):  # a kill while the new output is being written
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(generate_config(f"path={tiny_checkpoint}", f"input={tmp_path / 'in.txt'}", f"output={out}"))
    assert out.read_text() == "previous output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.txt"]  # no partial file left
    monkeypatch.undo()
    result = generate(generate_config(f"path={tiny_checkpoint}", f"input={tmp_path / 'in.txt'}", f"output={out}"))
    assert out.read_text().splitlines() == result["hypotheses"] and len(result["hypotheses"]) == 2


def test_binary_standard_input_fails_naming_the_line(tiny_checkpoint, tmp_path):
    result = run("toolkit-generate", f"path={tiny_checkpoint}", "input=-", "interactive_buffer=1",
                 input=b"the dog sleeps\n\x00\xff\xfe binary \x89PNG\n", cwd=tmp_path)
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert "toolkit-generate: DataError: standard input line 2 is not UTF-8 text (byte 0xff at column 2)" in stderr
    assert "Traceback" not in stderr
    assert len(result.stdout.decode().splitlines()) == 1  # the line before it was translated
