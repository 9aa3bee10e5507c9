"""``toolkit-distill``'s stages: the teacher translates the training sources, the distilled
corpus is written, the student trains on it with the teacher's tokenizers, and is scored."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.averaging import average as average_weights, newest_checkpoints
from toolkit.checkpoint import CheckpointError, load_checkpoint
from toolkit.data.preprocess import DataError, read_lines
from toolkit.errors import ConfigError
from toolkit.files import atomic_write_text
from toolkit.generation.workers import check_workers
from toolkit.inference import checkpoint_paths
from toolkit.training.distributed import init_distributed, shutdown

from distill.stages import fingerprint, run_stage
from distill.teacher import teacher_sha256
from distill.translate import read_chunks, translate_corpus

logger = logging.getLogger("toolkit-distill")
METHODS = ("real", "sequence", "word", "both")  # real: no distillation (the baseline student)


@dataclass
class DistillSettings:
    teacher: Path
    data: Path
    out: Path
    source_lang: str = "de"
    target_lang: str = "en"
    method: str = "sequence"  # sequence: train on the teacher's outputs; word: KD loss on real targets; both;
    # real: the same student on the real targets with the plain criterion (the table's baseline)
    engine: str = "toolkit"  # toolkit | ctranslate2 (the teacher's decoder for the training set)
    beam: int = 5
    batch: int = 64  # the teacher's batches: at most this many sentences...
    max_tokens: int = 4096  # ...and this many source tokens (ctranslate2: tokens only)
    chunk_lines: int = 2000
    workers: int = 1  # the teacher's decoding processes (CTranslate2: translators), sharing the threads
    mix_original: bool = False  # also keep the original targets in the student's corpus
    interpolate: bool = False  # sequence-level interpolation (Kim and Rush): of the teacher's beam, the
    # hypothesis of highest sentence BLEU against the original target (sequence, both)
    alpha: float = 0.5  # word-level KD weight
    temperature: float = 1.0
    average: int = 1  # the shipped student: the average of its newest N checkpoints (1: the last)
    student: list[str] = field(default_factory=list)  # toolkit-train overrides for the student


def check(settings: DistillSettings) -> None:
    """Everything that can be checked before any work."""
    if settings.method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {settings.method!r}")
    if settings.interpolate and settings.method not in ("sequence", "both"):
        raise ConfigError(f"interpolate=true chooses among the teacher's outputs: it needs method=sequence or both, "
                          f"not {settings.method}")
    check_workers(settings.workers)
    if settings.average < 1:
        raise ConfigError(f"average is how many of the student's newest checkpoints to average: at least 1, "
                          f"got {settings.average}")
    if settings.engine not in ("toolkit", "ctranslate2"):
        raise ConfigError(f"engine must be toolkit or ctranslate2, got {settings.engine!r}")
    members = checkpoint_paths(settings.teacher)
    if len(members) > 1 and settings.engine != "toolkit":
        raise ConfigError(f"engine={settings.engine} decodes one model: an ensemble teacher "
                          f"({len(members)} checkpoints) needs engine=toolkit")
    for member in members:
        try:  # missing, truncated or not a checkpoint: named before any cache is touched
            load_checkpoint(member)
        except CheckpointError as error:
            raise CheckpointError(f"the teacher: {error}") from None
    for split in ("train", "valid", "test"):
        for lang in (settings.source_lang, settings.target_lang):
            if not (settings.data / f"{split}.{lang}").is_file():
                raise DataError(f"the data folder {settings.data} has no {split}.{lang}")


def distill(settings: DistillSettings) -> dict:
    """Run (or resume) every stage; returns each stage's record, timings included.

    Under torchrun every rank translates its shard of the training sources and the student
    trains data-parallel; rank 0 writes the corpus and evaluates, and the other ranks return
    after training."""
    check(settings)
    context = init_distributed("auto")
    teacher_hash = teacher_sha256(settings.teacher)
    records = {}
    sources = settings.data / f"train.{settings.source_lang}"
    targets = settings.data / f"train.{settings.target_lang}"
    copied = [settings.data / f"{split}.{lang}" for split in ("train", "valid", "test")  # what the corpus is made of
              for lang in (settings.source_lang, settings.target_lang)]
    if settings.method in ("sequence", "both"):
        interpolation = ("interpolate", targets) if settings.interpolate else ()  # old caches keep their key
        key = fingerprint("translate", teacher_hash, sources, settings.engine, settings.beam, *interpolation)
        references = read_lines(targets) if settings.interpolate else None
        records["translate"] = run_stage(settings.out / "translate", "translate", key, lambda folder: timed(
            lambda: translate_corpus(read_lines(sources), folder, settings.teacher, settings.beam, settings.batch,
                                     settings.max_tokens, settings.chunk_lines, settings.engine, context=context,
                                     references=references, workers=settings.workers)),
            context, everyone=True)
        corpus_key = fingerprint("corpus", key, settings.mix_original, *copied)
    else:
        corpus_key = fingerprint("corpus", "original", *copied)
    records["corpus"] = run_stage(settings.out / "corpus", "corpus", corpus_key,
                                  lambda folder: timed(lambda: write_corpus(settings, folder)), context)
    train_key = fingerprint("student", corpus_key, teacher_hash, settings.method, settings.alpha, settings.temperature,
                            settings.student)
    records["student"] = run_stage(settings.out / "student", "student", train_key,
                                   lambda folder: timed(lambda: train_student(settings, folder, teacher_hash)),
                                   context, everyone=True)
    shutdown(context)  # training left the job already if it ran; evaluation is rank 0's alone
    if not context.is_master:
        return records
    averaging = ("average", settings.average) if settings.average > 1 else ()  # old caches keep their key
    records["evaluate"] = run_stage(settings.out / "evaluate", "evaluate", fingerprint("evaluate", train_key, *averaging),
                                    lambda folder: timed(lambda: evaluate(settings, records["student"], teacher_hash)))
    return records


def timed(work) -> dict:
    start = time.perf_counter()
    record = work()
    return {**record, "seconds": round(time.perf_counter() - start, 1)}


def write_corpus(settings: DistillSettings, folder: Path) -> dict:
    """train.{src,tgt} of the student (line-aligned; empty outputs dropped with their source),
    valid and test copied from the data folder."""
    src, tgt = settings.source_lang, settings.target_lang
    sources = read_lines(settings.data / f"train.{src}")
    originals = read_lines(settings.data / f"train.{tgt}")
    if settings.method in ("real", "word"):
        targets = originals
    else:
        targets = read_chunks(settings.out / "translate")
        if len(targets) != len(sources):
            raise DataError(f"the teacher's outputs have {len(targets)} lines for {len(sources)} sources: "
                            f"delete {settings.out / 'translate'} and run again")
    pairs = [(s, t) for s, t in zip(sources, targets, strict=True) if s.strip() and t.strip()]
    dropped = len(sources) - len(pairs)
    if settings.mix_original and settings.method in ("sequence", "both"):
        pairs += [(s, t) for s, t in zip(sources, originals, strict=True) if s.strip() and t.strip()]
    atomic_write_text(folder / f"train.{src}", "".join(s + "\n" for s, _ in pairs))
    atomic_write_text(folder / f"train.{tgt}", "".join(t + "\n" for _, t in pairs))
    for split in ("valid", "test"):
        for lang in (src, tgt):
            shutil.copyfile(settings.data / f"{split}.{lang}", folder / f"{split}.{lang}")
    logger.info("corpus: %d pairs (%d dropped: empty output or source)", len(pairs), dropped)
    return {"pairs": len(pairs), "dropped": dropped}


def train_student(settings: DistillSettings, folder: Path, teacher_hash: str) -> dict:
    """The student trains on the corpus, binarized with the teacher's tokenizers."""
    from toolkit.config import compose_train_config
    from toolkit.training.train import train

    overrides = [f"task.data={settings.out / 'corpus'}", f"task.source_lang={settings.source_lang}",
                 f"task.target_lang={settings.target_lang}", f"task.tokenizers_from={checkpoint_paths(settings.teacher)[0]}",
                 f"task.destdir={folder / 'data-bin'}", f"checkpoint.save_dir={folder}"]
    if settings.method in ("word", "both"):
        overrides += ["criterion=word_distill", f"criterion.teacher={settings.teacher}",
                      f"criterion.alpha={settings.alpha}", f"criterion.temperature={settings.temperature}"]
    history = train(compose_train_config([*overrides, *settings.student]))
    return {"num_updates": history["num_updates"], "checkpoint": str(folder / "checkpoint_last.pt"),
            "teacher_sha256": teacher_hash}


def evaluate(settings: DistillSettings, student: dict, teacher_hash: str) -> dict:
    """Write the student's inference checkpoint (``out/student.pt``, recording how it was
    made; with ``average`` > 1 the mean of its newest checkpoints' weights) and score it on test
    with beam search and greedy search, batch 64."""
    from toolkit.checkpoint import save_inference_checkpoint
    from toolkit.generation.generator import GenerationConfig
    from toolkit.generation.report import decode_alternately
    from toolkit.generation.translator import Translator
    from toolkit.inference import load_for_inference
    from toolkit.plugins import get_plugins
    from toolkit.scoring.bleu import score

    plugins = get_plugins()
    cfg, task, model, state = load_for_inference(student["checkpoint"], plugins, device="cpu")
    record = {"teacher": str(settings.teacher), "teacher_sha256": teacher_hash, "method": settings.method,
              "alpha": settings.alpha, "temperature": settings.temperature, "mix_original": settings.mix_original,
              "interpolate": settings.interpolate}
    if settings.average > 1:
        paths = newest_checkpoints(Path(student["checkpoint"]).parent, settings.average)
        if len(paths) < settings.average:
            raise ConfigError(f"average={settings.average}, but the student's run has {len(paths)} checkpoint(s) "
                              f"({', '.join(p.name for p in paths)}): give a smaller average (the trained student "
                              f"is kept; only the evaluation runs again)")
        model.load_state_dict(average_weights(paths)[1])
        record["averaged_from"] = [path.name for path in paths]
        logger.info("student: the average of %s", ", ".join(record["averaged_from"]))
    path = settings.out / "student.pt"
    size = save_inference_checkpoint(path, cfg, task, model, plugins, distilled_from=record,
                                     num_updates=state.get("num_updates"))
    sources = read_lines(settings.data / f"test.{settings.source_lang}")
    references = read_lines(settings.data / f"test.{settings.target_lang}")
    runs = {name: Translator(task, model, GenerationConfig(beam=beam), max_sentences=settings.batch)
            for name, beam in (("beam5", 5), ("greedy", 1))}
    totals = decode_alternately(runs, sources, rounds=1)
    scores = {name: {"bleu": round(score(t["outputs"], references).bleu, 2),
                     "sentences_per_s": round(t["sentences"] / t["seconds"], 1)} for name, t in totals.items()}
    logger.info("student %s: %s", path, scores)
    return {"student": str(path), "bytes": size, "parameters": model.num_parameters(), **scores}
