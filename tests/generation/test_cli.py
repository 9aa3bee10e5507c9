"""toolkit-generate, interactive mode through a real pipe, and checkpoint averaging."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit.cli.generate import generate
from toolkit.config import compose_train_config
from toolkit.data.preprocess import read_lines
from toolkit.data.toy_corpus import write_toy_corpus
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.translator import Translator
from toolkit.checkpoint import load_checkpoint
from toolkit.training.train import train

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[2]


def run(*args, **kwargs):
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=300, **kwargs)


def generate_in_process(*overrides):
    """What ``toolkit-generate OVERRIDES`` does, without starting a process: the same composition
    (``toolkit/conf/generate.yaml``) and the same ``generate(cfg)``."""
    return generate(compose_train_config(list(overrides), config_name="generate"))


SPLIT = ["split=test", "generation.beam=4", "max_sentences=32"]  # the test split, as both tests below decode it


@pytest.fixture(scope="module")
def fp32_split(trained_run, tmp_path_factory):
    """``toolkit-generate`` on the test split in fp32: the process's result and its output file."""
    tmp = tmp_path_factory.mktemp("generate-fp32")
    out = tmp / "hyps.txt"
    return run("toolkit-generate", f"path={trained_run / 'checkpoint_best.pt'}", *SPLIT, f"output={out}", cwd=tmp), out


def test_generate_a_split_writes_hypotheses_in_order_and_scores_them(trained_run, fp32_split):
    result, out = fp32_split
    assert result.returncode == 0, result.stderr
    assert "BLEU = " in result.stdout and "nrefs:1|case:mixed|eff:no|tok:13a" in result.stdout
    assert "tokenized BLEU = " in result.stdout and "chrF = " in result.stdout
    assert "sentences/s" in result.stdout and "tokens/s" in result.stdout and "peak RSS" in result.stdout
    hypotheses = read_lines(out)
    sources = read_lines(trained_run / "data-bin" / "toy-text" / "test.src")
    assert len(hypotheses) == len(sources)
    expected = Translator.from_checkpoint(trained_run / "checkpoint_best.pt", GenerationConfig(beam=4)).translate(sources[:20])
    assert hypotheses[:20] == [t.text for t in expected]


def test_workers_write_the_same_file_as_one_process(trained_run, fp32_split, tmp_path):
    out = tmp_path / "hyps.txt"
    result = generate_in_process(f"path={trained_run / 'checkpoint_best.pt'}", *SPLIT, f"output={out}", "workers=2")
    assert out.read_text() == fp32_split[1].read_text() and result["speed"].sentences == len(read_lines(out))
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        generate_in_process(f"path={trained_run / 'checkpoint_best.pt'}", *SPLIT, f"output={out}", "workers=0")


def test_generate_a_file_with_fairseq_lines(trained_run, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("the dog sleeps\n\nthe dogs see a cat\n")
    generate_in_process(f"path={trained_run / 'checkpoint_last.pt'}", f"input={source}",
                        f"output={tmp_path / 'out.txt'}", "fairseq_lines=true", "generation.nbest=2")
    stdout = capsys.readouterr().out
    lines = read_lines(tmp_path / "out.txt")
    assert len(lines) == 3 and lines[1] == "" and lines[0] and lines[2]
    for prefix in ("S-0\t", "H-0\t", "D-0\t", "P-0\t", "S-2\t"):
        assert prefix in stdout
    assert stdout.count("H-2\t") == 2  # nbest


def test_an_exit_policy_is_chosen_on_the_command_line(trained_run, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("the dog sleeps\nthe dogs see a cat\n")
    common = ["toolkit-generate", f"path={trained_run / 'checkpoint_last.pt'}", f"input={source}",
              f"output={tmp_path / 'out.txt'}", "generation/exit_policy=fixed_depth"]
    result = run(*common, "generation.exit_policy.block=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "average exit: 1.00 blocks (tokens exiting at block 1: 100.0%, 2: 0.0%)" in result.stdout
    # the same command line in process (errors reaching stderr: test_generate_with_a_bad_checkpoint_fails_clearly)
    with pytest.raises(ValueError, match=r"block must be in 1\.\.2 for this 2-block decoder, got 5"):
        generate_in_process(*common[1:], "generation.exit_policy.block=5")


def test_interactive_mode_through_a_pipe(trained_run, tmp_path):
    sources = read_lines(trained_run / "data-bin" / "toy-text" / "test.src")[:7]
    result = run("toolkit-generate", f"path={trained_run / 'checkpoint_last.pt'}", "input=-",
                 "interactive_buffer=3", input="\n".join(sources) + "\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = Translator.from_checkpoint(trained_run / "checkpoint_last.pt").translate(sources)
    assert result.stdout.splitlines() == [t.text for t in expected]


@pytest.mark.parametrize("path, message", [("nope.pt", "does not exist"), ("corrupt.pt", "truncated, corrupt")])
def test_generate_with_a_bad_checkpoint_fails_clearly(tmp_path, path, message):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    result = run("toolkit-generate", f"path={tmp_path / path}", cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr


def test_averaged_checkpoints_are_the_elementwise_mean_and_load(trained_run, tmp_path):
    inputs = [trained_run / f"checkpoint{i}.pt" for i in (2, 3)]
    out = tmp_path / "avg.pt"
    result = subprocess.run([sys.executable, "scripts/average_checkpoints.py", "--inputs", *map(str, inputs),
                             "--output", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    averaged = load_checkpoint(out)["model"]
    a, b = (load_checkpoint(p)["model"] for p in inputs)
    for key in a:
        torch.testing.assert_close(averaged[key], (a[key] + b[key]) / 2)
    assert not torch.equal(averaged["encoder.layers.0.ffn.fc1.weight"], a["encoder.layers.0.ffn.fc1.weight"])
    sources = read_lines(trained_run / "data-bin" / "toy-text" / "test.src")[:5]
    assert all(t.text for t in Translator.from_checkpoint(out).translate(sources))


def test_averaging_a_run_folder_takes_a_newer_mid_epoch_last_checkpoint(trained_run, tmp_path, capsys):
    import shutil

    # the script's main() in process (the script as a process: the test above)
    spec = importlib.util.spec_from_file_location("average_checkpoints", ROOT / "scripts" / "average_checkpoints.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("checkpoint2.pt", "checkpoint3.pt"):
        shutil.copy(trained_run / name, run_dir / name)
    args = ["--dir", str(run_dir), "--last", "2", "--output"]
    shutil.copy(trained_run / "checkpoint1.pt", run_dir / "checkpoint_last.pt")  # older: left out
    script.main([*args, str(tmp_path / "a.pt")])
    assert "checkpoint2.pt, checkpoint3.pt" in capsys.readouterr().out
    state = load_checkpoint(trained_run / "checkpoint3.pt")
    state["num_updates"] += 10  # as if training went on past the last epoch file
    torch.save(state, run_dir / "checkpoint_last.pt")
    script.main([*args, str(tmp_path / "b.pt")])
    assert "checkpoint3.pt, checkpoint_last.pt" in capsys.readouterr().out


def test_validation_bleu_picks_the_best_checkpoint(tmp_path):
    # 40 valid sentences to translate each epoch, not the toy task's default 500
    data = write_toy_corpus(tmp_path / "text", n_train=600, n_valid=40, n_test=20)
    cfg = compose_train_config([
        f"task.data={data}", "task.source_lang=src", "task.target_lang=tgt", "task.splits=[train,valid]",
        "task.vocab_size=200", "model.encoder_layers=1", "model.decoder_layers=1",
        "dataset.max_tokens=1024", "dataset.max_positions=64", "common.log_format=none",
        "common.tensorboard_dir=null", "optimization.max_epoch=2", "validation.bleu=true",
        "validation.generation.beam=2", "checkpoint.best_metric=bleu", "checkpoint.maximize_best_metric=true",
        f"checkpoint.save_dir={tmp_path}"])
    result = train(cfg)
    bleus = [v["bleu"] for v in result["valid"]]
    assert len(bleus) == 2 and all(0 <= b <= 100 for b in bleus)
    assert load_checkpoint(tmp_path / "checkpoint_best.pt")["best_metric"] == max(bleus)


def test_bf16_decoding_agrees_with_fp32(trained_run, fp32_split, tmp_path):
    result, fp32_out = fp32_split  # the fp32 run of the same command
    assert result.returncode == 0, result.stderr
    out = tmp_path / "bf16.txt"
    result = run("toolkit-generate", f"path={trained_run / 'checkpoint_best.pt'}", *SPLIT, "precision=bf16",
                 f"output={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    outputs = {"fp32": read_lines(fp32_out), "bf16": read_lines(out)}
    same = sum(a == b for a, b in zip(outputs["fp32"], outputs["bf16"], strict=True))
    assert same >= 0.9 * len(outputs["fp32"]), same
    with pytest.raises(ValueError, match="precision must be one of"):  # ConfigError is a ValueError
        generate_in_process(f"path={trained_run / 'checkpoint_best.pt'}", "precision=fp64")
