"""Stage 1: the teacher beam-translates the training sources, in chunks written atomically, so
an interrupted run resumes at the first missing chunk with no line lost or repeated. Under
torchrun each rank translates every ``world_size``-th chunk (its shard).

With the original targets given (``references``), each line is sequence-level interpolation's
choice (Kim and Rush 2016, section 3.2): of the teacher's whole beam, the hypothesis with the
highest sentence BLEU against the original target, instead of the beam's best."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from sacrebleu import sentence_bleu
from tqdm import tqdm

from toolkit.data.preprocess import DataError
from toolkit.files import atomic_write_text
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.translator import Translator
from toolkit.training.distributed import DistributedContext

logger = logging.getLogger("toolkit-distill")


def translate_corpus(sources: list[str], folder: Path, teacher_path: Path, beam: int, batch: int,
                     max_tokens: int, chunk_lines: int = 2000, engine: str = "toolkit", device: str = "auto",
                     context: DistributedContext | None = None, references: list[str] | None = None,
                     workers: int = 1) -> dict:
    """Write ``folder/chunks/NNNNN.txt`` (one hypothesis per source line, empty for skipped
    ones) with ``NNNNN.skipped`` (how many sources of the chunk were too long for the teacher)
    and return counts and timing, summed over the ranks (seconds: the slowest rank's;
    ``skipped_too_long`` over every chunk, those of an earlier, interrupted run too). Batches
    hold at most ``batch`` sentences and ``max_tokens`` source tokens. Chunks already in
    ``folder`` are kept: ``run_stage`` empties it when the teacher or the settings change.
    ``references`` (line-aligned with ``sources``): write the beam hypothesis closest to each.
    ``workers``: decoding processes (CTranslate2: translators) sharing this process's threads."""
    if references is not None and len(references) != len(sources):
        raise DataError(f"{len(sources)} training sources but {len(references)} targets")
    context = context or DistributedContext()
    chunks = folder / "chunks"
    if context.is_master:
        chunks.mkdir(parents=True, exist_ok=True)
        if engine == "ctranslate2" and not (folder / "teacher.ct2" / "model.bin").is_file():
            from toolkit.export.ctranslate2 import export_checkpoint

            export_checkpoint(teacher_path, folder / "teacher.ct2", force=True)  # once, for every rank
    context.barrier()
    total = (len(sources) + chunk_lines - 1) // chunk_lines
    mine = [i for i in range(context.rank, total, context.world_size) if not (chunks / f"{i:05d}.txt").is_file()]
    seconds, skipped, translated = 0.0, 0, 0
    if mine:
        decode = _decoder(teacher_path, beam, batch, max_tokens, engine, device, folder / "teacher.ct2",
                          nbest=beam if references is not None else 1, workers=workers)
        progress = tqdm(total=sum(len(sources[i * chunk_lines : (i + 1) * chunk_lines]) for i in mine),
                        unit="sent", desc=f"teacher (rank {context.rank})", disable=None)
        for index in mine:
            lines = sources[index * chunk_lines : (index + 1) * chunk_lines]
            start = time.perf_counter()
            nbest, too_long = decode(lines)  # per line: its hypotheses, best first ([] if skipped)
            targets = references[index * chunk_lines : (index + 1) * chunk_lines] if references else None
            hypotheses = [choose(options, targets[i] if targets else None) for i, options in enumerate(nbest)]
            seconds += time.perf_counter() - start
            skipped += too_long
            translated += len(lines)
            atomic_write_text(chunks / f"{index:05d}.skipped", str(too_long))  # before its chunk: kept together
            atomic_write_text(chunks / f"{index:05d}.txt", "".join(h + "\n" for h in hypotheses))
            progress.update(len(lines))
            logger.info("teacher: chunk %d/%d, %d sentences, %.1f sentences/s", index + 1, total, len(lines),
                        translated / max(seconds, 1e-9))
        progress.close()
    sums = context.sum_metrics({"translated_now": translated, "skipped_too_long_now": skipped}, torch.device("cpu"))
    skipped_in_all = sum(int(path.read_text()) for path in chunks.glob("*.skipped"))  # resumed chunks too
    return {"chunks": total, "translated_now": int(sums["translated_now"]), "skipped_too_long": skipped_in_all,
            "seconds_now": round(max(context.all_gather(seconds)), 1), "per_rank": context.all_gather(translated),
            "skipped_too_long_now": int(sums["skipped_too_long_now"])}


def choose(hypotheses: list[str], reference: str | None) -> str:
    """The line written for one source: the beam's best hypothesis, or with ``reference`` the
    one of highest sentence BLEU against it (the first of equals: the better-scored)."""
    if not hypotheses:
        return ""
    if reference is None or len(hypotheses) == 1:
        return hypotheses[0]
    similarity = [sentence_bleu(hypothesis, [reference]).score for hypothesis in hypotheses]
    return hypotheses[similarity.index(max(similarity))]


def _decoder(teacher_path: Path, beam: int, batch: int, max_tokens: int, engine: str, device: str, export: Path,
             nbest: int = 1, workers: int = 1):
    """A function ``lines -> (each line's ``nbest`` hypotheses, best first; sources too long)``
    for the chosen engine."""
    if engine == "ctranslate2":
        return _ctranslate2_decoder(teacher_path, beam, max_tokens, export, nbest, workers)
    translator = Translator.from_checkpoint(teacher_path, GenerationConfig(beam=beam, nbest=nbest), device,
                                            max_sentences=batch, max_tokens=max_tokens, workers=workers)
    detokenize = translator.task.tgt_tokenizer.decode
    max_source = translator.model.max_positions()[0] - 1

    def decode(lines: list[str]) -> tuple[list[list[str]], int]:
        ids = translator.task.src_tokenizer.encode([line.strip() for line in lines])
        fits = [i for i, s in enumerate(ids) if len(s) <= max_source]  # longer sources: skipped, not cut
        outputs: list[list[str]] = [[] for _ in lines]
        for i, translation in zip(fits, translator.translate([lines[i] for i in fits])):
            outputs[i] = [translation.text] + [detokenize(h.tokens.tolist()) for h in translation.hypotheses[1:]]
        return outputs, len(lines) - len(fits)

    return decode


def _ctranslate2_decoder(teacher_path: Path, beam: int, max_tokens: int, export: Path, nbest: int, workers: int):
    import ctranslate2
    import torch

    from toolkit.export.ctranslate2 import detokenize, source_pieces
    from toolkit.inference import load_for_inference

    _, task, model, _ = load_for_inference(teacher_path, device="cpu")
    engine = ctranslate2.Translator(str(export), device="cpu", inter_threads=workers,
                                    intra_threads=max(1, torch.get_num_threads() // workers))
    max_source = model.max_positions()[0] - 1

    def decode(lines: list[str]) -> tuple[list[list[str]], int]:
        pieces = source_pieces(task, [line.strip() for line in lines])
        fits = [i for i, p in enumerate(pieces) if 0 < len(p) <= max_source]
        results = engine.translate_batch([pieces[i] for i in fits], beam_size=beam, max_batch_size=max_tokens,
                                         batch_type="tokens", num_hypotheses=nbest,
                                         max_decoding_length=model.max_positions()[1] - 1)
        outputs: list[list[str]] = [[] for _ in lines]
        for i, result in zip(fits, results):
            outputs[i] = [detokenize(task, hypothesis) for hypothesis in result.hypotheses]
        return outputs, sum(len(p) > max_source for p in pieces)

    return decode


def read_chunks(folder: Path) -> list[str]:
    lines = []
    for path in sorted((folder / "chunks").glob("*.txt")):
        lines += path.read_text(encoding="utf-8").split("\n")[:-1]
    return lines
