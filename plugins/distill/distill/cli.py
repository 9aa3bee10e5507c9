r"""toolkit-distill: from a teacher checkpoint and a data folder to an evaluated student.

    toolkit-distill teacher=RUN/checkpoint_avg3.pt data=../shared/data/multi30k-task1 out=runs/kd \
        method=sequence student.model=transformer_student student.optimization.max_update=2000

Settings are ``key=value``: ``teacher`` (a checkpoint, or an ensemble of several sharing their
tokenizers joined by ``:``, ``a.pt:b.pt``: it decodes and teaches as the mean of their
probabilities; engine toolkit only), ``data``  (train/valid/test.{source,target}), ``out``,
``source_lang`` (de), ``target_lang`` (en), ``method`` (sequence | word | both | real:
the baseline, no distillation), ``engine``
(toolkit | ctranslate2: the teacher's decoder for the training set), ``beam`` (5), ``batch``
(64), ``chunk_lines`` (2000), ``workers`` (1: the teacher's decoding processes),
``mix_original`` (false), ``interpolate`` (false: true writes,
of the teacher's beam, the hypothesis of highest sentence BLEU against the original target,
Kim and Rush's sequence-level interpolation), ``alpha`` (0.5) and ``temperature``
(1.0) of word-level KD, ``average`` (1: ``student.pt`` is the average of the student's newest N
checkpoints; a change re-evaluates without retraining); every ``student.KEY=VALUE`` is a
``toolkit-train`` override of the student's run. Stages and their outputs under ``out``: ``translate/`` (the teacher's outputs, in
chunks: an interrupted run resumes at the first missing one), ``corpus/``, ``student/`` (the
training run), ``evaluate/`` and ``student.pt`` (the student's inference checkpoint, recording
the teacher's path and content hash and the method). Each stage is stamped with a hash of its
inputs: a rerun skips what is done and redoes what changed (another teacher, other data).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

from toolkit.errors import ConfigError

from distill.pipeline import DistillSettings, distill

PATHS = ("teacher", "data", "out")


def parse(argv: list[str]) -> DistillSettings:
    values, student = {}, []
    fields = {f.name: f for f in dataclasses.fields(DistillSettings)}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value, got {item!r}")
        if key.startswith("student."):
            student.append(f"{key.removeprefix('student.')}={value}")
        elif key in fields and key != "student":
            values[key] = _typed(fields[key], value)
        else:
            raise ConfigError(f"unknown setting {key!r}; known: {', '.join(sorted(set(fields) - {'student'}))}, "
                              f"student.<toolkit-train override>")
    missing = [key for key in PATHS if key not in values]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}= (the teacher checkpoint, the data folder, the output folder)")
    return DistillSettings(**values, student=student)


def _typed(field: dataclasses.Field, value: str):
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "str")
    if kind == "Path":
        return Path(value)
    if kind == "bool":
        if value.lower() not in ("true", "false"):
            raise ConfigError(f"{field.name} must be true or false, got {value!r}")
        return value.lower() == "true"
    try:
        return {"int": int, "float": float}.get(kind, str)(value)
    except ValueError:
        raise ConfigError(f"{field.name} must be a number, got {value!r}") from None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from toolkit.cli import reporting_errors

    with reporting_errors("toolkit-distill"):
        records = distill(parse(sys.argv[1:] if argv is None else argv))
    print(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
