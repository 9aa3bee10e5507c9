"""Plain text folder -> tokenizer(s) + binarized splits, rebuilt only when stale.

Input: ``DATA/{split}.{lang}`` text files, one sentence per line. Output in ``DESTDIR``:
``tokenizer.{src,tgt}.pt`` (the same model twice for a joint vocabulary),
``{split}.{lang}.bin/.idx`` and ``manifest.json``, written last: it records the inputs'
checksums and the settings, so a change to either (or an interrupted run) triggers a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from toolkit.data.indexed_dataset import write_indexed
from toolkit.data.tokenizer import PretokenizedTokenizer, SentencePieceTokenizer, Tokenizer, tokenizer_from_state_dict
from toolkit.checkpoint import load_checkpoint
from toolkit.errors import UserError
from toolkit.files import atomic_write_text, atomic_write_with, remove_stale_temporaries
from toolkit.locks import DATA_LOCK, folder_lock

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TOKENIZER_FILES = ("tokenizer.src.pt", "tokenizer.tgt.pt")  # source side, target side
FORMAT_VERSION = 1
LOCK_WAIT_S = 3 * 3600.0  # how long to wait for another process preparing the same destdir


class DataError(UserError, ValueError):
    """Missing or malformed input data."""


@dataclass(frozen=True)
class PreprocessSettings:
    source_lang: str
    target_lang: str
    splits: tuple[str, ...]
    tokenizer: str  # sentencepiece | pretokenized
    vocab_size: int
    joint_vocab: bool
    spm_model_type: str
    character_coverage: float
    min_count: int
    seed: int
    tokenizers_from: str | None = None  # a checkpoint or binarized folder whose tokenizers to use
    # True: drop the pairs with a line that is not UTF-8 (counted in the log); None (not False,
    # so that manifests written before this setting stay valid): such a line is an error
    skip_undecodable: bool | None = None


def read_lines(path: str | os.PathLike, hint: str = "") -> list[str]:
    """The lines of a UTF-8 text file, without their line ends (``\\n`` or ``\\r\\n``).

    :raises DataError: naming the file and its first line that is not UTF-8 text (then ``hint``).
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return _split_lines(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise DataError(undecodable_message(path, data, error.start) + hint) from None


def read_lines_skipping(path: str | os.PathLike) -> tuple[list[str], list[int]]:
    """``read_lines`` that reads a line that is not UTF-8 as ``""``; also returns the numbers
    (from 1) of those lines."""
    data = Path(path).read_bytes()
    try:
        return _split_lines(data.decode("utf-8")), []
    except UnicodeDecodeError:
        pass
    lines, bad = [], []
    for number, raw in enumerate(data.split(b"\n")[: -1 if data.endswith(b"\n") else None], start=1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            lines.append("")
            bad.append(number)
    return lines, bad


def undecodable_message(name: str | os.PathLike, data: bytes, offset: int, first_line: int = 1) -> str:
    """``"NAME line L is not UTF-8 text (byte 0xXX at column C)"`` for a decoding error at
    ``offset`` of ``data``, whose first line is line ``first_line`` of NAME."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + first_line
    return f"{name} line {line} is not UTF-8 text (byte 0x{data[offset]:02x} at column {offset - line_start + 1})"


def _split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines[-1] == "":  # the end of the last line, or an empty file
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def split_files(data: Path, settings: PreprocessSettings) -> dict[str, tuple[Path, Path]]:
    """``{split: (source_file, target_file)}``; train must exist, other splits are optional."""
    if not data.is_dir():
        raise DataError(f"data folder {data} does not exist")
    found = {}
    for split in settings.splits:
        src, tgt = (data / f"{split}.{lang}" for lang in (settings.source_lang, settings.target_lang))
        if not src.exists() and not tgt.exists() and split != "train":
            logger.info("no %s split in %s", split, data)
            continue
        for path in (src, tgt):
            if not path.exists():
                raise DataError(f"missing data file {path} (expected {split}.{settings.source_lang} "
                                f"and {split}.{settings.target_lang} in {data})")
        found[split] = (src, tgt)
    return found


def is_up_to_date(destdir: Path, data: Path, settings: PreprocessSettings) -> bool:
    manifest = destdir / MANIFEST
    if not manifest.exists():
        return False
    try:
        if json.loads(manifest.read_text()) != _manifest(data, settings):
            return False
        return all((destdir / name).exists() for name in _outputs(split_files(data, settings), settings))
    except (json.JSONDecodeError, OSError, DataError):
        return False


def preprocess(data: str | os.PathLike, destdir: str | os.PathLike, settings: PreprocessSettings,
               lock_wait_s: float = LOCK_WAIT_S) -> Path:
    """Train the tokenizer(s) on train and binarize every split, unless already up to date.

    Holds ``destdir``'s lock meanwhile: another process preparing it is waited for (up to
    ``lock_wait_s``), then finds the data up to date. Stale temporary files are removed first.
    """
    data, destdir = Path(data), Path(destdir)
    with folder_lock(destdir, DATA_LOCK, "preparing data", wait_s=lock_wait_s):
        remove_stale_temporaries(destdir, recursive=True)
        return _preprocess(data, destdir, settings)


def _preprocess(data: Path, destdir: Path, settings: PreprocessSettings) -> Path:
    if is_up_to_date(destdir, data, settings):
        logger.info("binarized data in %s is up to date", destdir)
        return destdir
    files = split_files(data, settings)
    texts = {split: _read_pairs(split, src_path, tgt_path, settings) for split, (src_path, tgt_path) in files.items()}
    _check_training_text(texts["train"], files["train"])
    given = given_tokenizers(Path(settings.tokenizers_from)) if settings.tokenizers_from else None  # before any change
    destdir.mkdir(parents=True, exist_ok=True)
    (destdir / MANIFEST).unlink(missing_ok=True)  # stale until the last file is written
    for split in set(settings.splits) - set(files):  # a split removed from DATA: drop its old binaries
        for name in _split_outputs(split, settings):
            (destdir / name).unlink(missing_ok=True)
    if given:
        logger.info("binarizing %s with the tokenizers of %s", data, settings.tokenizers_from)
        tokenizers = given
    else:
        logger.info("training %s tokenizer(s) on %s (%d pairs)", settings.tokenizer, data, len(texts["train"][0]))
        tokenizers = _train_tokenizers(texts["train"], settings)
    for name, tokenizer in zip(TOKENIZER_FILES, tokenizers):
        state = tokenizer.state_dict()
        atomic_write_with(destdir / name, lambda f: torch.save(state, f))
    for split, sides in texts.items():
        for lang, lines, tokenizer in zip((settings.source_lang, settings.target_lang), sides, tokenizers):
            ids = tokenizer.encode(lines)
            write_indexed(destdir / f"{split}.{lang}", ids, len(tokenizer.dictionary))
            unk = sum(seq.count(tokenizer.dictionary.unk) for seq in ids)
            total = max(1, sum(len(seq) for seq in ids))
            logger.info("binarized %s.%s: %d lines, %d tokens, %.2f%% unknown", split, lang,
                        len(ids), total, 100 * unk / total)
    atomic_write_text(destdir / MANIFEST, json.dumps(_manifest(data, settings), indent=1))
    return destdir


def load_tokenizers(destdir: str | os.PathLike) -> tuple[Tokenizer, Tokenizer]:
    destdir = Path(destdir)
    return tuple(  # type: ignore[return-value]
        tokenizer_from_state_dict(torch.load(destdir / name, weights_only=True)) for name in TOKENIZER_FILES
    )


def given_tokenizers(source: Path) -> tuple[Tokenizer, Tokenizer]:
    """The tokenizers of a checkpoint (a translation run's) or of a binarized data folder."""
    if source.is_dir():
        if not all((source / name).exists() for name in TOKENIZER_FILES):
            raise DataError(f"{source} holds no tokenizer.src.pt/tokenizer.tgt.pt (not a binarized data folder)")
        return load_tokenizers(source)
    task_state = load_checkpoint(source).get("task", {})
    if not {"src_tokenizer", "tgt_tokenizer"} <= task_state.keys():
        raise DataError(f"checkpoint {source} holds no translation tokenizers")
    return tuple(  # type: ignore[return-value]
        tokenizer_from_state_dict(task_state[f"{side}_tokenizer"]) for side in ("src", "tgt"))


def _read_pairs(split: str, src_path: Path, tgt_path: Path, s: PreprocessSettings) -> tuple[list[str], list[str]]:
    """The two sides of a split; with ``skip_undecodable``, without the pairs that have a line
    that is not UTF-8 (counted in the log)."""
    if not s.skip_undecodable:
        hint = "; fix the file, or set task.skip_undecodable=true to skip the pairs of such lines"
        src, tgt, bad = read_lines(src_path, hint), read_lines(tgt_path, hint), []
    else:
        (src, src_bad), (tgt, tgt_bad) = read_lines_skipping(src_path), read_lines_skipping(tgt_path)
        bad = sorted(set(src_bad) | set(tgt_bad))
    if len(src) != len(tgt):
        raise DataError(f"{split}: {src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; "
                        f"a parallel corpus needs the same number of lines on both sides")
    if bad:
        logger.warning("%s: skipped %d of %d pairs with a line that is not UTF-8 text (task.skip_undecodable): "
                       "lines %s%s of %s / %s", split, len(bad), len(src), ", ".join(map(str, bad[:10])),
                       ", ..." if len(bad) > 10 else "", src_path, tgt_path.name)
        dropped = set(b - 1 for b in bad)
        src, tgt = ([line for i, line in enumerate(side) if i not in dropped] for side in (src, tgt))
    return src, tgt


def _check_training_text(train: tuple[list[str], list[str]], paths: tuple[Path, Path]) -> None:
    """Fail unless some training pair has text on both sides (a tokenizer cannot learn from
    nothing, and a model would train on nothing)."""
    if any(src.strip() and tgt.strip() for src, tgt in zip(*train)):
        return
    blank = [str(path) for path, lines in zip(paths, train) if not any(line.strip() for line in lines)]
    where = " and ".join(blank or map(str, paths))
    raise DataError(f"no non-empty training pairs in {where} ({len(train[0])} lines, none with text on both "
                    f"sides): check task.data and the file names ({paths[0].name}, {paths[1].name})")


def _train_tokenizers(train: tuple[list[str], list[str]], s: PreprocessSettings) -> tuple[Tokenizer, Tokenizer]:
    def fit(lines: list[str]) -> Tokenizer:
        if s.tokenizer == "sentencepiece":
            return SentencePieceTokenizer.train(
                (line for line in lines if line.strip()), s.vocab_size, s.spm_model_type,
                s.character_coverage, seed=s.seed)
        if s.tokenizer == "pretokenized":
            return PretokenizedTokenizer.train(lines, s.vocab_size, s.min_count)
        raise DataError(f"unknown tokenizer {s.tokenizer!r}: use sentencepiece or pretokenized")

    if s.joint_vocab:
        joint = fit(train[0] + train[1])
        return joint, joint
    return fit(train[0]), fit(train[1])


def _split_outputs(split: str, settings: PreprocessSettings) -> list[str]:
    return [f"{split}.{lang}{ext}" for lang in (settings.source_lang, settings.target_lang)
            for ext in (".bin", ".idx")]


def _outputs(files: dict, settings: PreprocessSettings) -> list[str]:
    """Names of every file preprocessing writes for the splits in ``files`` (manifest aside)."""
    return list(TOKENIZER_FILES) + [
        name for split in files for name in _split_outputs(split, settings)]


def _manifest(data: Path, settings: PreprocessSettings) -> dict:
    files = split_files(data, settings)
    inputs = {p.name: _sha256(p) for pair in files.values() for p in pair}
    if settings.tokenizers_from:  # a changed source of tokenizers means new ids
        source = Path(settings.tokenizers_from)
        for path in [source / name for name in TOKENIZER_FILES] if source.is_dir() else [source]:
            inputs[f"tokenizers:{path}"] = _sha256(path) if path.exists() else "missing"
    return {
        "format": FORMAT_VERSION,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(settings).items()
                     if v is not None},  # None: a setting added later and unused keeps old manifests valid
        "inputs": inputs,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

