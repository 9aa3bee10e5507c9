"""``toolkit-generate``: translate a split, a file or standard input with a checkpoint.

Writes detokenized hypotheses in source order, scores them with sacreBLEU when references
are known, and reports decoding speed.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import BinaryIO, Iterator, TextIO

import torch
from omegaconf import DictConfig, OmegaConf

from toolkit.checkpoint import CheckpointError, load_checked
from toolkit.cli import hydra_entry
from toolkit.config import ConfigError, GenerateConfig, non_finite_values
from toolkit.data.preprocess import DataError, read_lines, undecodable_message
from toolkit.files import atomic_write_text
from toolkit.generation.report import SpeedMeter
from toolkit.generation.translator import Translation, Translator, generation_config
from toolkit.generation.workers import check_workers
from toolkit.inference import checkpoint_paths, describe_checkpoints, load_ensemble_for_inference
from toolkit.plugins import get_plugins
from toolkit.precision import dtype_of
from toolkit.scoring.bleu import score

logger = logging.getLogger("toolkit.generate")


def generate(cfg: DictConfig | GenerateConfig) -> dict:
    """Translate as ``cfg`` says; returns ``{"hypotheses", "scores", "speed", "output"}``.

    The settings, the input and reference files (read, so bad text fails too), the output's
    folder and the split's files are checked before the model is built: a mistake fails in
    seconds, not after translating. The output file is written atomically.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    plugins = get_plugins()
    _check_settings(cfg)
    interactive = cfg.input == "-"
    given = _read_given(cfg) if cfg.input and not interactive else None
    paths = checkpoint_paths(cfg.path)  # several: an ensemble
    output = None if interactive else _checked_output(cfg, paths[0])
    state = load_checked(paths[0], plugins, for_inference=True)
    if not interactive and given is None:
        given = _read_split(cfg, state, plugins)
    _, task, model, _ = load_ensemble_for_inference(paths, plugins, cfg.device, cfg.plugin_options, cfg.precision,
                                                    state=state)
    described = describe_checkpoints(paths, model)
    logger.info("checkpoint %s", described)
    translator = Translator(task, model, generation_config(cfg.generation), plugins,
                            max_sentences=cfg.max_sentences, max_tokens=cfg.max_tokens, workers=cfg.workers)
    meter = SpeedMeter(translator.device)
    if interactive:
        _interactive(translator, meter, sys.stdin.buffer, sys.stdout, cfg.interactive_buffer)
        logger.info(meter.summary())
        return {"speed": meter}
    sources, references = given
    with meter:
        translations = translator.translate(sources)
    meter.add(translations)
    hypotheses = [t.text for t in translations]
    atomic_write_text(output, "".join(h + "\n" for h in hypotheses))
    if cfg.fairseq_lines:
        _print_fairseq_lines(translations, references, task)
    result = {"hypotheses": hypotheses, "speed": meter, "scores": None, "output": str(output)}
    logger.info("hypotheses written to %s", output)
    if references is not None:
        result["scores"] = score(hypotheses, references)
        for line in result["scores"].lines():
            print(line)
    print(meter.summary())
    print(f"checkpoint   {described}")
    if translator.generator.exit_policy is not None:
        histogram = ", ".join(f"{block}: {share:.1%}"
                              for block, share in enumerate(translator.generator.exit_histogram(), start=1))
        print(f"average exit: {translator.generator.average_exit():.2f} blocks (tokens exiting at block {histogram})")
    return result


def _check_settings(cfg) -> None:
    dtype_of(cfg.precision)  # an unknown name fails before the checkpoint is read
    for path in checkpoint_paths(cfg.path):
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
    check_workers(cfg.workers)  # the device is checked once the model is on it
    bad = non_finite_values(cfg)
    if bad:
        raise ConfigError("; ".join(f"{key} must be a finite number, got {value}" for key, value in bad))


def _read_given(cfg) -> tuple[list[str], list[str] | None]:
    """The ``input`` file's lines, and the ``reference`` file's (as many) if one is given."""
    sources = read_lines(_existing(cfg.input, "source"))
    references = read_lines(_existing(cfg.reference, "reference")) if cfg.reference else None
    if references is not None and len(references) != len(sources):
        raise DataError(f"{cfg.input} has {len(sources)} lines but {cfg.reference} has {len(references)}")
    return sources, references


def _read_split(cfg, state: dict, plugins) -> tuple[list[str], list[str] | None]:
    """The source lines of ``split`` in the checkpoint's data folder (or ``data``), and the
    target side's as references when there is one."""
    run_cfg = OmegaConf.create(state["cfg"])
    task = plugins.registries.task.build(run_cfg.task, run_cfg)
    data, settings = (Path(cfg.data) if cfg.data else task.data_dir()), task.settings()
    source = _existing(data / f"{cfg.split}.{settings.source_lang}", f"split {cfg.split!r}: source")
    target = data / f"{cfg.split}.{settings.target_lang}"
    return read_lines(source), read_lines(target) if target.exists() else None


def _checked_output(cfg, checkpoint: Path) -> Path:
    """Where the hypotheses go (default: beside the (first) checkpoint), once its folder is
    known to exist and to be writable."""
    name = Path(cfg.input).name if cfg.input else cfg.split
    output = Path(cfg.output) if cfg.output else checkpoint.parent / f"generate-{name}.txt"
    folder = output.parent
    if output.is_dir():
        raise ConfigError(f"output={output} is a folder: name a file in it")
    if not folder.is_dir():
        raise ConfigError(f"cannot write {output}: folder {folder} does not exist (create it, or change output=)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {output}: folder {folder} is not writable (change output=)")
    return output


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    return path


def _interactive(translator: Translator, meter: SpeedMeter, stdin: BinaryIO, stdout: TextIO, buffer: int) -> None:
    """A terminal gets each line translated as it is typed; a pipe is read in batches.

    ``stdin`` is read as bytes and decoded here, so a line that is not UTF-8 stops the command
    naming that line (the chunks before its own are translated)."""
    chunk = 1 if stdin.isatty() else buffer
    for lines in _chunks(_decoded_lines(stdin, "standard input"), chunk):
        with meter:
            translations = translator.translate(lines)
        meter.add(translations)
        stdout.write("".join(t.text + "\n" for t in translations))
        stdout.flush()


def _decoded_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\n").rstrip("\r")
        except UnicodeDecodeError as error:
            raise DataError(undecodable_message(name, raw, error.start, first_line=number)) from None


def _chunks(stream: Iterator[str], size: int) -> Iterator[list[str]]:
    lines = []
    for line in stream:
        lines.append(line)
        if len(lines) == size:
            yield lines
            lines = []
    if lines:
        yield lines


def _print_fairseq_lines(translations: list[Translation], references: list[str] | None, task) -> None:
    for i, t in enumerate(translations):
        print(f"S-{i}\t{t.source}")
        if references is not None:
            print(f"T-{i}\t{references[i]}")
        for hyp in t.hypotheses:
            pieces = " ".join(task.tgt_dict.symbols_of(hyp.tokens.tolist()))
            print(f"H-{i}\t{hyp.score:.4f}\t{pieces}")
            print(f"D-{i}\t{hyp.score:.4f}\t{task.tgt_tokenizer.decode(hyp.tokens.tolist())}")
            print(f"P-{i}\t" + " ".join(f"{p:.4f}" for p in hyp.positional_scores.tolist()))


main = hydra_entry("generate", generate)


if __name__ == "__main__":
    main()
