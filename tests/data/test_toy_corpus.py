"""Behaviour of the self-generated toy parallel corpus (toolkit.data.toy_corpus)."""

import json
import os
import subprocess
import sys

import pytest

from toolkit.data import toy_corpus
from toolkit.data.toy_corpus import generate_pairs, translate, write_toy_corpus

NOUNS = ["dog", "cat", "river", "king", "queen", "house", "tree", "apple", "sword", "bird"]
SPLITS = ("train", "valid", "test")


def tok(source: str) -> list[str]:
    return translate(source).split()


def read_lines(path) -> list[str]:
    data = path.read_bytes()
    assert b"\r" not in data and (not data or data.endswith(b"\n"))
    return data.decode("utf-8").split("\n")[:-1]


def snapshot(out) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted(out.iterdir())}


def test_generate_pairs_is_deterministic_per_seed():
    assert generate_pairs(200, 3) == generate_pairs(200, 3)
    assert generate_pairs(200, 3) != generate_pairs(200, 4)
    assert generate_pairs(0, 3) == []
    assert generate_pairs(50, 3) == generate_pairs(200, 3)[:50]


def test_pairs_are_well_formed_and_match_translate():
    pairs = generate_pairs(2000, 7)
    lengths = [len(src.split()) for src, _ in pairs]
    assert min(lengths) >= 3 and max(lengths) <= 25
    assert any(" and " in src for src, _ in pairs)
    for src, tgt in pairs:
        assert tgt.isascii() and tgt == tgt.lower() and tgt.split()
        assert translate(src) == tgt
    assert len({src for src, _ in pairs}) > 1900  # varied, not a handful of templates


def test_lexicon_does_not_depend_on_seed_or_hash_randomisation():
    shared = dict(generate_pairs(3000, 1)).keys() & dict(generate_pairs(3000, 2)).keys()
    assert shared  # short sentences recur; their translations must agree across seeds
    assert all(dict(generate_pairs(3000, 1))[s] == dict(generate_pairs(3000, 2))[s] for s in shared)
    sentence = "the big red dog sees some small cats near the old river and a king sleeps"
    code = f"from toolkit.data.toy_corpus import translate; print(translate({sentence!r}))"
    root = os.path.dirname(os.path.dirname(os.path.dirname(toy_corpus.__file__)))
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": root}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, check=True)
    assert result.stdout.strip() == translate(sentence)


@pytest.mark.parametrize("bad", [
    "the dog xyzzy", "the florp sleeps", "The dog sleeps", "",
    "a dogs sleep", "some dog sleeps", "the dog sleep", "the dogs sleeps",
    "the dog sees", "the dog sleeps the cat", "dog sleeps", "the dog sleeps and",
    "and the dog sleeps", "the dog sleeps and and the cat runs", "the dog near the river",
])
def test_translate_rejects_unknown_words_and_ungrammatical_input(bad):
    with pytest.raises(ValueError):
        translate(bad)


def test_number_agreement_on_determiner_noun_adjective_and_verb():
    sg, pl = tok("the big dog sleeps"), tok("the big dogs sleep")
    assert len(sg) == len(pl) == 4
    assert all(a != b for a, b in zip(sg, pl))  # det, noun, adjective and verb all change
    # the verb suffix depends on subject number only, not on the noun
    assert tok("the cat sleeps")[-1] == sg[-1] and tok("some cats sleep")[-1] == pl[-1]
    assert tok("every king runs")[-1] != tok("the kings run")[-1]


def test_gender_agreement_on_determiner_and_adjective():
    det_forms = {noun: tok(f"the old {noun} sleeps")[0] for noun in NOUNS}
    assert len(set(det_forms.values())) == 2  # two genders, one "the" form each
    masc, fem = (next(n for n in NOUNS if det_forms[n] == d) for d in sorted(set(det_forms.values())))
    assert tok(f"the old {masc} sleeps")[2] != tok(f"the old {fem} sleeps")[2]  # adjective too
    assert tok(f"the old {masc}s sleep")[0] != tok(f"the old {fem}s sleep")[0]


def test_verb_moves_to_clause_end():
    sentence = "the dog sees the cat quickly"
    assert sentence.split().index("sees") == 2  # SVO source
    target = tok(sentence)
    dog, cat = tok("the dog sleeps")[:2], tok("the cat sleeps")[:2]
    sees = tok("the cat sees the dog")[-1]
    assert target[:4] == dog + cat and target[-1] == sees
    assert target[4] == tok("the cat sleeps quickly")[2]  # adverb right before the verb
    both = tok("the dog sees the cat and the cat sleeps")
    assert both[4] == sees and both[-1] == tok("the cat sleeps")[-1]  # each clause verb-final
    assert both[5] == tok("the cat sleeps and the dog sleeps")[3]  # the conjunction


def test_adjectives_follow_noun_in_mirror_order():
    plain, one = tok("the dog sleeps"), tok("the red dog sleeps")
    assert one[:2] == plain[:2] and one[3] == plain[2] and one[2] not in plain
    two = tok("the big red dog sleeps")
    assert two == plain[:2] + [one[2], tok("the big dog sleeps")[2], plain[2]]


def test_prepositional_phrases_become_postpositional_and_move():
    river, cat = tok("the river sleeps")[:2], tok("the cat sleeps")[:2]
    dog_sleeps = tok("the dog sleeps")
    near = tok("the dog sleeps near the river")  # locative: clause-initial
    assert near[:2] == river and near[3:] == dog_sleeps
    with_ = tok("the dog sleeps quietly with the cat")  # other: before adverb and verb
    assert with_[:2] == dog_sleeps[:2] and with_[2:4] == cat and with_[-1] == dog_sleeps[-1]
    assert with_[5] == tok("the dog sleeps quietly")[2]
    assert near[2] != with_[4]


def test_write_toy_corpus_files_counts_and_disjoint_splits(tmp_path):
    out = write_toy_corpus(tmp_path / "toy", n_train=400, n_valid=60, n_test=50, seed=5)
    assert out == tmp_path / "toy"
    counts = {"train": 400, "valid": 60, "test": 50}
    lines = {}
    for split in SPLITS:
        src, tgt = read_lines(out / f"{split}.src"), read_lines(out / f"{split}.tgt")
        assert len(src) == len(tgt) == counts[split]
        assert all(translate(s) == t for s, t in zip(src, tgt))
        lines[split] = src
    assert not set(lines["valid"]) & set(lines["train"])
    assert not set(lines["test"]) & set(lines["train"])
    assert not set(lines["test"]) & set(lines["valid"])
    assert len(set(lines["valid"])) == 60 and len(set(lines["test"])) == 50
    marker = json.loads((out / "toy_corpus.json").read_text(encoding="utf-8"))
    assert marker["seed"] == 5 and marker["n_train"] == 400
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}.{side}" for s in SPLITS for side in ("src", "tgt")] + ["toy_corpus.json"])
    again = write_toy_corpus(tmp_path / "toy2", n_train=400, n_valid=60, n_test=50, seed=5)
    assert all((again / f"{s}.src").read_bytes() == (out / f"{s}.src").read_bytes() for s in SPLITS)


def test_write_toy_corpus_skips_when_complete_and_rewrites_on_change(tmp_path):
    out = write_toy_corpus(str(tmp_path), n_train=100, n_valid=20, n_test=20, seed=1)
    before = snapshot(out)
    assert write_toy_corpus(tmp_path, n_train=100, n_valid=20, n_test=20, seed=1) == out
    assert snapshot(out) == before  # nothing rewritten

    old_train = (out / "train.src").read_text(encoding="utf-8")
    write_toy_corpus(tmp_path, n_train=100, n_valid=20, n_test=20, seed=2)
    assert snapshot(out) != before
    assert (out / "train.src").read_text(encoding="utf-8") != old_train
    assert json.loads((out / "toy_corpus.json").read_text(encoding="utf-8"))["seed"] == 2

    write_toy_corpus(tmp_path, n_train=150, n_valid=20, n_test=20, seed=2)
    assert len(read_lines(out / "train.src")) == len(read_lines(out / "train.tgt")) == 150

    (out / "valid.tgt").write_text("truncated\n", encoding="utf-8")  # damaged file
    write_toy_corpus(tmp_path, n_train=150, n_valid=20, n_test=20, seed=2)
    assert len(read_lines(out / "valid.tgt")) == 20
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
