"""Plain text folder -> tokenizers + binarized splits, rebuilt only when stale (toolkit.data.preprocess)."""

import io
import json
import os

import pytest
import torch
from omegaconf import OmegaConf

from toolkit.config import compose_train_config
from toolkit.data import preprocess as preprocess_module
from toolkit.data.dictionary import SPECIALS
from toolkit.data.indexed_dataset import IndexedDataset
from toolkit.data.preprocess import MANIFEST, DataError, PreprocessSettings, load_tokenizers, preprocess
from toolkit.data.tokenizer import PretokenizedTokenizer, SentencePieceTokenizer
from toolkit.data.toy_corpus import write_toy_corpus
from toolkit.tasks.translation import TranslationConfig, TranslationTask
from toolkit.checkpoint import CheckpointError

OLD = 1_000_000_000  # a fixed past mtime (2001): any rewrite gives a file a newer one


def settings(**overrides) -> PreprocessSettings:
    values = dict(source_lang="src", target_lang="tgt", splits=("train", "valid", "test"),
                  tokenizer="sentencepiece", vocab_size=200, joint_vocab=True, spm_model_type="unigram",
                  character_coverage=1.0, min_count=1, seed=1)
    values.update(overrides)
    return PreprocessSettings(**values)


@pytest.fixture
def corpus(tmp_path):
    return write_toy_corpus(tmp_path / "text", n_train=300, n_valid=40, n_test=30, seed=2)


@pytest.fixture
def train_calls(monkeypatch):
    """Counts tokenizer trainings (the expensive part a skipped run must not repeat)."""
    calls = []
    original = preprocess_module._train_tokenizers

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(preprocess_module, "_train_tokenizers", spy)
    return calls


def age(destdir) -> dict:
    """Set every output file's mtime to OLD; return {name: inode}."""
    inodes = {}
    for path in destdir.iterdir():
        os.utime(path, ns=(OLD * 10**9, OLD * 10**9))
        inodes[path.name] = path.stat().st_ino
    return inodes


def rewritten(destdir) -> set:
    return {p.name for p in destdir.iterdir() if p.stat().st_mtime_ns != OLD * 10**9}


def lines(path) -> list:
    return path.read_text(encoding="utf-8").splitlines()


def decoded(destdir, split, lang, tokenizer) -> list:
    data = IndexedDataset(destdir / f"{split}.{lang}")
    return [tokenizer.decode(data[i]) for i in range(len(data))]


def test_binarizes_every_split(corpus, tmp_path):
    dest = tmp_path / "bin"
    assert preprocess(corpus, dest, settings()) == dest
    expected = {MANIFEST, "tokenizer.src.pt", "tokenizer.tgt.pt"} | {
        f"{split}.{lang}.{ext}" for split in ("train", "valid", "test") for lang in ("src", "tgt")
        for ext in ("bin", "idx")}
    assert {p.name for p in dest.iterdir()} == expected  # nothing temporary left behind
    src_tok, tgt_tok = load_tokenizers(dest)
    assert isinstance(src_tok, SentencePieceTokenizer)
    for split, count in (("train", 300), ("valid", 40), ("test", 30)):
        for lang, tokenizer in (("src", src_tok), ("tgt", tgt_tok)):
            text = lines(corpus / f"{split}.{lang}")
            assert len(text) == count
            assert decoded(dest, split, lang, tokenizer) == text
    manifest = json.loads((dest / MANIFEST).read_text())
    assert manifest["settings"]["vocab_size"] == 200
    assert set(manifest["inputs"]) == {f"{s}.{l}" for s in ("train", "valid", "test") for l in ("src", "tgt")}


def test_second_call_is_skipped(corpus, tmp_path, train_calls):
    dest = tmp_path / "bin"
    preprocess(corpus, dest, settings())
    assert len(train_calls) == 1
    inodes = age(dest)
    preprocess(corpus, dest, settings())
    assert len(train_calls) == 1
    assert rewritten(dest) == set()
    assert {p.name: p.stat().st_ino for p in dest.iterdir()} == inodes


def test_changed_input_text_triggers_rebuild(corpus, tmp_path, train_calls):
    dest = tmp_path / "bin"
    preprocess(corpus, dest, settings())
    age(dest)
    train = lines(corpus / "train.src")
    train[0] = "the zebra sees the zebra"  # same number of lines, other content
    (corpus / "train.src").write_text("\n".join(train) + "\n", encoding="utf-8")
    preprocess(corpus, dest, settings())
    assert len(train_calls) == 2
    assert {MANIFEST, "tokenizer.src.pt", "train.src.bin", "test.tgt.idx"} <= rewritten(dest)
    src_tok, _ = load_tokenizers(dest)
    assert decoded(dest, "train", "src", src_tok)[0] == "the zebra sees the zebra"


def test_changed_held_out_split_triggers_rebuild(corpus, tmp_path, train_calls):
    dest = tmp_path / "bin"
    preprocess(corpus, dest, settings())
    age(dest)
    valid = lines(corpus / "valid.tgt")
    (corpus / "valid.tgt").write_text("\n".join(reversed(valid)) + "\n", encoding="utf-8")
    preprocess(corpus, dest, settings())
    _, tgt_tok = load_tokenizers(dest)
    assert decoded(dest, "valid", "tgt", tgt_tok) == valid[::-1]
    assert MANIFEST in rewritten(dest)


def test_changed_setting_triggers_rebuild(corpus, tmp_path, train_calls):
    dest = tmp_path / "bin"
    preprocess(corpus, dest, settings(vocab_size=200))
    small = len(load_tokenizers(dest)[0].dictionary)
    age(dest)
    preprocess(corpus, dest, settings(vocab_size=100))
    assert len(train_calls) == 2
    assert {MANIFEST, "tokenizer.src.pt", "tokenizer.tgt.pt", "train.src.bin"} <= rewritten(dest)
    assert len(load_tokenizers(dest)[0].dictionary) < small
    assert json.loads((dest / MANIFEST).read_text())["settings"]["vocab_size"] == 100
    # and back: settings are compared, not just "was something built"
    age(dest)
    preprocess(corpus, dest, settings(vocab_size=100))
    assert rewritten(dest) == set() and len(train_calls) == 2
    preprocess(corpus, dest, settings(vocab_size=100, seed=2))
    assert len(train_calls) == 3


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DataError, match="no-such-folder"):
        preprocess(missing, tmp_path / "bin", settings())
    assert not (tmp_path / "bin" / MANIFEST).exists()


def test_missing_train_target(corpus, tmp_path):
    (corpus / "train.tgt").unlink()
    with pytest.raises(DataError) as error:
        preprocess(corpus, tmp_path / "bin", settings())
    assert "train.tgt" in str(error.value)


def test_half_present_optional_split_is_an_error(corpus, tmp_path):
    (corpus / "valid.src").unlink()
    with pytest.raises(DataError, match="valid.src"):
        preprocess(corpus, tmp_path / "bin", settings())


def test_test_split_is_optional(corpus, tmp_path):
    (corpus / "test.src").unlink()
    (corpus / "test.tgt").unlink()
    dest = preprocess(corpus, tmp_path / "bin", settings())
    names = {p.name for p in dest.iterdir()}
    assert "valid.src.bin" in names and "train.tgt.idx" in names
    assert not any(name.startswith("test.") for name in names)
    assert len(IndexedDataset(dest / "valid.tgt")) == 40


def test_removed_split_leaves_no_stale_binaries(corpus, tmp_path):
    dest = tmp_path / "bin"
    preprocess(corpus, dest, settings())
    assert (dest / "test.src.bin").exists()
    (corpus / "test.src").unlink()
    (corpus / "test.tgt").unlink()
    preprocess(corpus, dest, settings())
    assert not any(p.name.startswith("test.") for p in dest.iterdir())  # not the old test set
    with pytest.raises(FileNotFoundError):
        IndexedDataset(dest / "test.src")


def test_deleted_output_triggers_rebuild(corpus, tmp_path, train_calls):
    dest = tmp_path / "bin"
    preprocess(corpus, dest, settings())
    (dest / "valid.tgt.idx").unlink()
    preprocess(corpus, dest, settings())
    assert len(train_calls) == 2
    assert len(IndexedDataset(dest / "valid.tgt")) == 40


def test_mismatched_line_counts_name_both_counts(corpus, tmp_path):
    tgt = lines(corpus / "train.tgt")
    (corpus / "train.tgt").write_text("\n".join(tgt[:-3]) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        preprocess(corpus, tmp_path / "bin", settings())
    message = str(error.value)
    assert "300" in message and "297" in message and "train" in message


def test_interrupted_run_is_rebuilt(corpus, tmp_path, train_calls):
    dest = tmp_path / "bin"
    preprocess(corpus, dest, settings())
    # as if killed mid-run: no manifest yet and a half-written binary
    (dest / MANIFEST).unlink()
    (dest / "valid.src.bin").write_bytes(b"garbage")
    age(dest)
    preprocess(corpus, dest, settings())
    assert len(train_calls) == 2
    assert {MANIFEST, "valid.src.bin"} <= rewritten(dest)
    src_tok, _ = load_tokenizers(dest)
    assert decoded(dest, "valid", "src", src_tok) == lines(corpus / "valid.src")


def test_corrupt_manifest_is_rebuilt(corpus, tmp_path, train_calls):
    dest = tmp_path / "bin"
    preprocess(corpus, dest, settings())
    (dest / MANIFEST).write_text("{not json")
    preprocess(corpus, dest, settings())
    assert len(train_calls) == 2
    json.loads((dest / MANIFEST).read_text())


def test_joint_vocabulary_is_shared(corpus, tmp_path):
    src_tok, tgt_tok = load_tokenizers(preprocess(corpus, tmp_path / "bin", settings(joint_vocab=True)))
    assert src_tok.dictionary == tgt_tok.dictionary
    assert src_tok.model_proto == tgt_tok.model_proto


def test_separate_vocabularies_differ(corpus, tmp_path):
    dest = preprocess(corpus, tmp_path / "bin", settings(joint_vocab=False))
    src_tok, tgt_tok = load_tokenizers(dest)
    assert src_tok.dictionary != tgt_tok.dictionary
    assert src_tok.dictionary.symbols[:4] == tgt_tok.dictionary.symbols[:4] == list(SPECIALS)
    for split in ("train", "test"):
        assert decoded(dest, split, "src", src_tok) == lines(corpus / f"{split}.src")
        assert decoded(dest, split, "tgt", tgt_tok) == lines(corpus / f"{split}.tgt")


def test_pretokenized(tmp_path):
    data = tmp_path / "text"
    data.mkdir()
    src = ["I don 't know .", "it &apos;s Bob &apos;s dog .", "hello , world !", "rare word here"]
    tgt = ["ich weiß nicht .", "das ist Bobs Hund .", "hallo , Welt !", "seltenes Wort hier"]
    (data / "train.de").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    (data / "train.en").write_text("\n".join(src) + "\n", encoding="utf-8")
    (data / "valid.de").write_text("hallo Bob\n", encoding="utf-8")
    (data / "valid.en").write_text("hello unseen\n", encoding="utf-8")
    s = settings(source_lang="en", target_lang="de", tokenizer="pretokenized", joint_vocab=False,
                 vocab_size=1000)
    dest = preprocess(data, tmp_path / "bin", s)
    en, de = load_tokenizers(dest)
    assert isinstance(en, PretokenizedTokenizer) and isinstance(de, PretokenizedTokenizer)
    assert "'t" in en.dictionary.indices and "&apos;s" in en.dictionary.indices
    assert "weiß" in de.dictionary.indices and "weiß" not in en.dictionary.indices
    assert decoded(dest, "train", "en", en) == src
    assert decoded(dest, "train", "de", de) == tgt
    assert decoded(dest, "valid", "en", en) == ["hello <unk>"]
    assert not (dest / "test.en.bin").exists()


def test_unknown_tokenizer_is_a_data_error(corpus, tmp_path):
    with pytest.raises(DataError, match="bogus"):
        preprocess(corpus, tmp_path / "bin", settings(tokenizer="bogus"))


# --- TranslationTask: data preparation ------------------------------------------------------

def make_task(save_dir, *overrides):
    run_cfg = compose_train_config([f"checkpoint.save_dir={save_dir}", "task.toy_pairs=300",
                                    "task.vocab_size=200", *overrides])
    cfg = TranslationConfig(**OmegaConf.to_container(run_cfg.task, resolve=True))
    return TranslationTask(cfg, run_cfg)


def test_task_prepares_the_toy_corpus_when_data_is_unset(tmp_path, train_calls):
    task = make_task(tmp_path)
    assert task.cfg.data is None and task.cfg.destdir == f"{tmp_path}/data-bin"
    task.prepare()
    dest = tmp_path / "data-bin"
    toy = dest / "toy-text"
    assert len(lines(toy / "train.src")) == 300 and len(lines(toy / "train.tgt")) == 300
    assert (dest / MANIFEST).exists() and len(train_calls) == 1
    assert json.loads((dest / MANIFEST).read_text())["settings"]["vocab_size"] == 200
    assert task.src_dict == task.tgt_dict and 5 < len(task.src_dict) <= 200
    assert task.tgt_dict.pad == 1

    train = task.load_dataset("train", max_positions=256)
    assert len(train) == 300 and train.skipped == {"empty": 0, "too_long": 0}
    assert [task.src_tokenizer.decode(train.src[i]) for i in range(300)] == lines(toy / "train.src")
    assert [task.tgt_tokenizer.decode(train.tgt[i]) for i in range(300)] == lines(toy / "train.tgt")
    valid = task.load_dataset("valid", max_positions=8)
    assert len(valid) + valid.skipped["too_long"] == len(lines(toy / "valid.src")) > 0
    assert valid.skipped["too_long"] > 0

    itr = task.batch_iterator(train, train=True)
    seen = sorted(i for sample in itr.next_epoch_itr() for i in sample["id"].tolist())
    assert seen == list(range(300))

    # a second task on the same folder reuses everything
    age(dest)
    again = make_task(tmp_path)
    again.prepare()
    assert len(train_calls) == 1 and rewritten(dest) == set()
    assert again.src_dict == task.src_dict

    # the tokenizers travel in checkpoints without the data
    state = torch_roundtrip(task.state_dict())
    restored = TranslationTask(task.cfg, task.run_cfg)
    restored.load_state_dict(state)
    sentence = lines(toy / "test.src")[0]
    assert restored.src_tokenizer.encode([sentence]) == task.src_tokenizer.encode([sentence])


def test_task_with_a_data_folder_and_languages(tmp_path):
    data = tmp_path / "text"
    data.mkdir()
    for split, n in (("train", 20), ("valid", 3)):
        (data / f"{split}.de").write_text("".join(f"hallo welt {i}\n" for i in range(n)), encoding="utf-8")
        (data / f"{split}.en").write_text("".join(f"hello world {i}\n" for i in range(n)), encoding="utf-8")
    task = make_task(tmp_path / "ckpt", f"task.data={data}", "task.source_lang=de", "task.target_lang=en",
                     "task.tokenizer=pretokenized", "task.joint_vocab=false")
    task.prepare()
    assert not (tmp_path / "ckpt" / "data-bin" / "toy-text").exists()
    assert "hallo" in task.src_dict.indices and "hallo" not in task.tgt_dict.indices
    valid = task.load_dataset("valid", max_positions=None)
    assert [task.tgt_tokenizer.decode(valid.tgt[i]) for i in range(3)] == [f"hello world {i}" for i in range(3)]
    with pytest.raises(FileNotFoundError):
        task.load_dataset("test", max_positions=None)


def torch_roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_given_tokenizers_binarize_new_data_with_the_same_ids(corpus, tmp_path, train_calls):
    parent = tmp_path / "parent-bin"
    preprocess(corpus, parent, settings())
    new_data = write_toy_corpus(tmp_path / "new-text", n_train=200, n_valid=20, n_test=20, seed=7)
    child = tmp_path / "child-bin"
    preprocess(new_data, child, settings(tokenizers_from=str(parent), vocab_size=999))
    assert len(train_calls) == 1  # only the parent trained a tokenizer
    for side in ("src", "tgt"):  # the parent's tokenizers, byte for byte
        assert (child / f"tokenizer.{side}.pt").read_bytes() == (parent / f"tokenizer.{side}.pt").read_bytes()
    src_tok, _ = load_tokenizers(parent)
    assert decoded(child, "train", "src", src_tok) == lines(new_data / "train.src")
    manifest = json.loads((child / MANIFEST).read_text())
    assert manifest["settings"]["tokenizers_from"] == str(parent)
    # new tokenizers at the source: the ids may change, so the data is rebuilt
    age(child)
    preprocess(corpus, parent, settings(vocab_size=150))
    preprocess(new_data, child, settings(tokenizers_from=str(parent), vocab_size=999))
    assert "train.src.bin" in rewritten(child)


def test_given_tokenizers_from_a_checkpoint_and_bad_sources(corpus, tmp_path):
    parent = tmp_path / "parent-bin"
    preprocess(corpus, parent, settings())
    src_tok, tgt_tok = load_tokenizers(parent)
    checkpoint = tmp_path / "model.pt"
    torch.save({"cfg": {}, "model": {}, "task": {"src_tokenizer": src_tok.state_dict(),
                                                 "tgt_tokenizer": tgt_tok.state_dict()}}, checkpoint)
    child = tmp_path / "child-bin"
    preprocess(corpus, child, settings(tokenizers_from=str(checkpoint)))
    assert decoded(child, "valid", "tgt", tgt_tok) == lines(corpus / "valid.tgt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no tokenizer.src.pt"):
        preprocess(corpus, tmp_path / "x", settings(tokenizers_from=str(tmp_path / "empty")))
    with pytest.raises(CheckpointError, match="does not exist"):
        preprocess(corpus, tmp_path / "x", settings(tokenizers_from=str(tmp_path / "nope.pt")))
    torch.save({"cfg": {}, "model": {}}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="holds no translation tokenizers"):
        preprocess(corpus, tmp_path / "y", settings(tokenizers_from=str(tmp_path / "other.pt")))
