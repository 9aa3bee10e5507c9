"""``toolkit-generate``: translate a split, a file or standard input with a checkpoint.

Writes detokenized hypotheses in source order, scores them with sacreBLEU when references
are known, and reports decoding speed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Iterator, TextIO

import torch
from omegaconf import DictConfig

from toolkit.checkpoint import describe
from toolkit.cli import hydra_entry
from toolkit.config import GenerateConfig
from toolkit.data.preprocess import read_lines
from toolkit.generation.report import SpeedMeter
from toolkit.generation.translator import Translation, Translator, generation_config
from toolkit.inference import load_for_inference
from toolkit.plugins import get_plugins
from toolkit.precision import dtype_of
from toolkit.scoring.bleu import score

logger = logging.getLogger("toolkit.generate")


def generate(cfg: DictConfig | GenerateConfig) -> dict:
    """Translate as ``cfg`` says; returns ``{"hypotheses", "scores", "speed"}``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    plugins = get_plugins()
    dtype_of(cfg.precision)  # an unknown name fails before the checkpoint is read
    _, task, model, _ = load_for_inference(cfg.path, plugins, cfg.device, cfg.plugin_options, cfg.precision)
    logger.info("checkpoint %s", describe(cfg.path, model))
    translator = Translator(task, model, generation_config(cfg.generation), plugins,
                            max_sentences=cfg.max_sentences, max_tokens=cfg.max_tokens)
    meter = SpeedMeter(translator.device)
    if cfg.input == "-":
        _interactive(translator, meter, sys.stdin, sys.stdout, cfg.interactive_buffer)
        logger.info(meter.summary())
        return {"speed": meter}
    sources, references, name = _inputs(cfg, task)
    with meter:
        translations = translator.translate(sources)
    meter.add(translations)
    hypotheses = [t.text for t in translations]
    output = Path(cfg.output) if cfg.output else Path(cfg.path).parent / f"generate-{name}.txt"
    output.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    if cfg.fairseq_lines:
        _print_fairseq_lines(translations, references, task)
    result = {"hypotheses": hypotheses, "speed": meter, "scores": None, "output": str(output)}
    logger.info("hypotheses written to %s", output)
    if references is not None:
        result["scores"] = score(hypotheses, references)
        for line in result["scores"].lines():
            print(line)
    print(meter.summary())
    print(f"checkpoint   {describe(cfg.path, model)}")
    if translator.generator.exit_policy is not None:
        histogram = ", ".join(f"{block}: {share:.1%}"
                              for block, share in enumerate(translator.generator.exit_histogram(), start=1))
        print(f"average exit: {translator.generator.average_exit():.2f} blocks (tokens exiting at block {histogram})")
    return result


def _inputs(cfg, task) -> tuple[list[str], list[str] | None, str]:
    if cfg.input:
        references = read_lines(Path(cfg.reference)) if cfg.reference else None
        sources = read_lines(_existing(cfg.input))
        if references is not None and len(references) != len(sources):
            raise ValueError(f"{cfg.input} has {len(sources)} lines but {cfg.reference} has {len(references)}")
        return sources, references, Path(cfg.input).name
    data = Path(cfg.data) if cfg.data else task.data_dir()
    settings = task.settings()
    source = _existing(data / f"{cfg.split}.{settings.source_lang}")
    target = data / f"{cfg.split}.{settings.target_lang}"
    references = read_lines(target) if target.exists() else None
    return read_lines(source), references, cfg.split


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source file {path} does not exist")
    return path


def _interactive(translator: Translator, meter: SpeedMeter, stdin: TextIO, stdout: TextIO, buffer: int) -> None:
    """A terminal gets each line translated as it is typed; a pipe is read in batches."""
    chunk = 1 if stdin.isatty() else buffer
    for lines in _chunks(stdin, chunk):
        with meter:
            translations = translator.translate(lines)
        meter.add(translations)
        stdout.write("".join(t.text + "\n" for t in translations))
        stdout.flush()


def _chunks(stream: TextIO, size: int) -> Iterator[list[str]]:
    lines = []
    for line in stream:
        lines.append(line.rstrip("\n"))
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
