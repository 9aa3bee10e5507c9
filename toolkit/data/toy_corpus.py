"""A synthetic, self-generated parallel corpus for demos and smoke tests.

``toolkit-train`` without arguments trains on this corpus, so it needs no
downloads. The pair is small enough for a tiny transformer to learn in minutes,
yet not word-for-word: the model must reorder and handle agreement.

Source language ("src"), English-like and SVO, 430 word forms::

    S      -> CLAUSE ("and" CLAUSE)?             3 to 25 words in all
    CLAUSE -> NP V_intr [ADV] [PP]  |  NP V_tr NP [ADV] [PP]
    NP     -> DET ADJ{0,2} NOUN                  the/a(n)/every + singular, the/some + plural
    PP     -> PREP NP                            "near the old river"

Verbs agree with the subject in number ("the dog sees", "the dogs see").

Target language ("tgt"), invented and SOV. Its words are pronounceable
lowercase ascii syllables drawn from a *fixed* internal seed, so every corpus
seed shares one lexicon. Each noun has one of two genders::

    CLAUSE -> [PP_loc] NP_subj [NP_obj] [PP_other] [ADV] VERB     (verb always last)
    NP     -> DET NOUN ADJ*       adjectives follow the noun, in mirror order
    PP     -> NP POSTPOSITION

Determiners and adjectives agree with the noun: -o masc. sg., -a fem. sg.,
-i masc. pl., -e fem. pl. Plural nouns add -n. The verb ends in -a for a
singular subject and in -un for a plural one. Locative phrases (near, under, ...)
open the clause; the other phrases (with, without, for) go just before the
adverb and verb. "and" joins clauses in the source order. The translation is a
function of the source sentence (:func:`translate`).
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import random
from collections.abc import Iterator

from toolkit.files import atomic_write_text

__all__ = ["translate", "generate_pairs", "write_toy_corpus"]

_LEXICON_SEED = 20240611  # fixed: the lexicon never depends on the corpus seed
_VERSION = 1  # bump whenever the grammar or lexicon changes (invalidates caches)
_MAX_LEN = 25

_NOUNS = """dog cat bird horse cow goat fox bear lion tiger rabbit snake frog duck owl eagle farmer
    teacher doctor student king queen soldier sailor baker painter singer writer hunter merchant
    girl boy friend neighbor stranger river mountain forest field garden house village city castle
    bridge road tower church market school window door table chair bed lamp book letter song story
    boat ship car train wagon apple bread cheese cake basket box bottle cup stone tree flower rock
    hill lake island valley cloud star moon fire wall gate key coin ring sword shield hat coat shoe
    bell drum flag map lantern candle wheel rope tent cave barn kitchen pot spoon plate""".split()
_ADJECTIVES = """big small old young red blue green black white happy sad quiet loud tall short
    brave clever lazy angry kind proud strong weak rich poor dark bright heavy light warm cold wet
    dry empty full strange famous gentle wild hungry tired beautiful ugly tiny ancient narrow wide
    silent""".split()
_VERBS_INTR = """sleep run walk laugh cry smile dance swim jump wait rest shout arrive travel work
    play listen wander sit stand fall whistle hurry sneeze shiver""".split()
_VERBS_TR = """see find carry watch follow help paint build open push pull hold catch love hate
    like need want visit take bring buy sell cook clean wash touch kick draw feed meet call greet
    chase fix guard admire ignore remember forget""".split()
_ADVERBS = """quickly slowly quietly loudly often rarely happily sadly carefully suddenly always
    never sometimes again today""".split()
_PREPS_LOC = "near under behind above beside inside outside across".split()
_PREPS_OTHER = "with without for".split()
_DETS = {"the": (False, True), "a": (False,), "every": (False,), "some": (True,)}  # allowed plurals
_AGREEMENT = {(0, False): "o", (1, False): "a", (0, True): "i", (1, True): "e"}  # (gender, plural)
_TRANSITIVE = frozenset(_VERBS_TR)


def _inflect_s(word: str) -> str:
    """English -s inflection: plural nouns and third-person-singular verbs."""
    if word.endswith(("s", "x", "z", "ch", "sh", "o")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _build_lexicon() -> tuple[dict, dict]:
    """Source word -> analysis, and lemma -> target forms; deterministic."""
    rng = random.Random(_LEXICON_SEED)
    used: set[str] = set()

    def fresh(syllables: int, coda: bool, forms) -> list[str]:
        while True:
            stem = "".join(rng.choice("bdfghklmnprstvz") + rng.choice("aeiou")
                           for _ in range(syllables))
            out = forms(stem + (rng.choice("nrlsmk") if coda else ""))
            if len(set(out)) == len(out) and used.isdisjoint(out):
                used.update(out)
                return out

    def agreeing(stem: str) -> list[str]:
        return [stem + suffix for suffix in _AGREEMENT.values()]

    src: dict[str, tuple] = {}

    def add(word: str, analysis: tuple) -> None:
        assert word not in src, f"ambiguous source word {word!r}"
        src[word] = analysis

    tgt: dict[str, object] = {}
    genders = [i % 2 for i in range(len(_NOUNS))]
    rng.shuffle(genders)
    for noun, gender in zip(_NOUNS, genders):
        add(noun, ("noun", noun, False))
        add(_inflect_s(noun), ("noun", noun, True))
        tgt[noun] = (gender, *fresh(rng.choice((2, 2, 3)), False, lambda s: [s, s + "n"]))
    for det in _DETS:
        add(det, ("det", det))
        tgt[det] = dict(zip(_AGREEMENT, fresh(1, True, agreeing)))
    add("an", ("det", "a"))
    for adj in _ADJECTIVES:
        add(adj, ("adj", adj))
        tgt[adj] = dict(zip(_AGREEMENT, fresh(rng.choice((2, 3)), True, agreeing)))
    for verb in _VERBS_INTR + _VERBS_TR:
        add(verb, ("verb", verb, True))  # base form: plural subject
        add(_inflect_s(verb), ("verb", verb, False))
        sg, pl = fresh(rng.choice((2, 3)), True, lambda s: [s + "a", s + "un"])
        tgt[verb] = {False: sg, True: pl}
    for kind, words, syllables in (("adv", _ADVERBS, 3), ("prep", _PREPS_LOC + _PREPS_OTHER, 1),
                                   ("and", ["and"], 1)):
        for word in words:
            add(word, (kind, word))
            tgt[word] = fresh(syllables, False, lambda s: [s])[0]
    return src, tgt


_SRC, _TGT = _build_lexicon()

# Trees: NP = (det, adjectives, noun, plural); CLAUSE = (subj, verb, obj, adv, pp), where
# obj, adv and pp may be None and pp = (preposition, NP).


def _sample_np(rng: random.Random) -> tuple:
    plural = rng.random() < 0.4
    det = rng.choice(("the", "some") if plural else ("the", "the", "a", "a", "every"))
    r = rng.random()
    adjs = tuple(rng.sample(_ADJECTIVES, 0 if r < 0.55 else 1 if r < 0.9 else 2))
    return det, adjs, rng.choice(_NOUNS), plural


def _sample_clause(rng: random.Random) -> tuple:
    subj = _sample_np(rng)
    if rng.random() < 0.6:
        verb, obj = rng.choice(_VERBS_TR), _sample_np(rng)
    else:
        verb, obj = rng.choice(_VERBS_INTR), None
    adv = rng.choice(_ADVERBS) if rng.random() < 0.3 else None
    pp = (rng.choice(_PREPS_LOC + _PREPS_OTHER), _sample_np(rng)) if rng.random() < 0.35 else None
    return subj, verb, obj, adv, pp


def _src_np(np_: tuple) -> list[str]:
    det, adjs, noun, plural = np_
    words = [*adjs, _inflect_s(noun) if plural else noun]
    return ["an" if det == "a" and words[0][0] in "aeiou" else det, *words]


def _src_clause(clause: tuple) -> list[str]:
    subj, verb, obj, adv, pp = clause
    out = _src_np(subj) + [verb if subj[3] else _inflect_s(verb)]
    out += (_src_np(obj) if obj else []) + ([adv] if adv else [])
    return out + ([pp[0], *_src_np(pp[1])] if pp else [])


def _tgt_np(np_: tuple) -> list[str]:
    det, adjs, noun, plural = np_
    gender, singular_form, plural_form = _TGT[noun]
    agr = (gender, plural)
    return [_TGT[det][agr], plural_form if plural else singular_form,
            *(_TGT[adj][agr] for adj in reversed(adjs))]


def _tgt_clause(clause: tuple) -> list[str]:
    subj, verb, obj, adv, pp = clause
    phrase = _tgt_np(pp[1]) + [_TGT[pp[0]]] if pp else []
    locative = bool(pp) and pp[0] in _PREPS_LOC
    out = (phrase if locative else []) + _tgt_np(subj) + (_tgt_np(obj) if obj else [])
    out += ([] if locative else phrase) + ([_TGT[adv]] if adv else [])
    return out + [_TGT[verb][subj[3]]]


def _render(clauses: list[tuple], clause_fn, conjunction: str) -> list[str]:
    out = clause_fn(clauses[0])
    for clause in clauses[1:]:
        out += [conjunction, *clause_fn(clause)]
    return out


def _parse_clause(toks: list[str]) -> tuple:
    pos = 0

    def take(kind: str) -> tuple | None:
        nonlocal pos
        if pos < len(toks) and _SRC[toks[pos]][0] == kind:
            pos += 1
            return _SRC[toks[pos - 1]]
        return None

    def noun_phrase() -> tuple:
        det, adjs = take("det"), []
        while det is not None and (adj := take("adj")) is not None:
            adjs.append(adj[1])
        noun = take("noun")
        if det is None or noun is None or noun[2] not in _DETS[det[1]]:
            raise ValueError(f"expected a noun phrase (determiner, adjectives, noun) in {toks}")
        return det[1], tuple(adjs), noun[1], noun[2]

    subj = noun_phrase()
    verb = take("verb")
    if verb is None or verb[2] != subj[3]:
        raise ValueError(f"expected a verb agreeing with the subject in {toks}")
    obj = noun_phrase() if verb[1] in _TRANSITIVE else None
    adv, prep = take("adv"), take("prep")
    pp = (prep[1], noun_phrase()) if prep else None
    if pos != len(toks):
        raise ValueError(f"unexpected {toks[pos]!r} in {toks}")
    return subj, verb[1], obj, adv and adv[1], pp


def translate(source_sentence: str) -> str:
    """Return the reference target translation of a source sentence of this grammar.

    The translation is deterministic and independent of any corpus seed. Raises
    ValueError for a word not in the source lexicon or a sentence that the
    grammar does not produce (for example "a dogs sleep", "the dog sleep").
    """
    tokens = source_sentence.split()
    unknown = [tok for tok in tokens if tok not in _SRC]
    if unknown:
        raise ValueError(f"words not in the toy source lexicon: {unknown}")
    groups = [list(g) for is_and, g in itertools.groupby(tokens, "and".__eq__) if not is_and]
    if not groups or tokens.count("and") != len(groups) - 1:
        raise ValueError(f"'and' must join two non-empty clauses: {source_sentence!r}")
    clauses = [_parse_clause(group) for group in groups]
    return " ".join(_render(clauses, _tgt_clause, _TGT["and"]))


def _pair_stream(rng: random.Random) -> Iterator[tuple[str, str]]:
    while True:
        clauses = [_sample_clause(rng)] + ([_sample_clause(rng)] if rng.random() < 0.25 else [])
        src = _render(clauses, _src_clause, "and")
        if len(src) <= _MAX_LEN:
            yield " ".join(src), " ".join(_render(clauses, _tgt_clause, _TGT["and"]))


def generate_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Return ``n`` (source, target) sentence pairs sampled with ``seed``.

    Same seed, same pairs. Sentences may repeat, more often the short ones.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return list(itertools.islice(_pair_stream(random.Random(seed)), n))


def _is_complete(out: pathlib.Path, params: dict, counts: dict[str, int]) -> bool:
    try:
        if json.loads((out / "toy_corpus.json").read_text(encoding="utf-8")) != params:
            return False
        return all((out / f"{split}.{side}").read_bytes().count(b"\n") == n
                   for split, n in counts.items() for side in ("src", "tgt"))
    except (OSError, ValueError):
        return False


def write_toy_corpus(out_dir: str | os.PathLike, n_train: int = 20000, n_valid: int = 500,
                     n_test: int = 500, seed: int = 1) -> pathlib.Path:
    """Write ``out_dir/{train,valid,test}.{src,tgt}`` and return ``out_dir`` as a Path.

    One sentence a line, UTF-8, ``\\n`` endings. No valid or test source sentence
    occurs in train, and valid and test share none. Every file is written through a
    temporary file and ``os.replace``; the marker ``toy_corpus.json`` (the
    parameters) comes last. When the marker matches and all six files have the
    expected line counts, nothing is written.
    """
    out = pathlib.Path(out_dir)
    counts = {"train": n_train, "valid": n_valid, "test": n_test}
    if min(counts.values()) < 0:
        raise ValueError(f"split sizes must be >= 0, got {counts}")
    params = {"version": _VERSION, "seed": seed, **{f"n_{k}": v for k, v in counts.items()}}
    if _is_complete(out, params, counts):
        return out
    out.mkdir(parents=True, exist_ok=True)
    stream, held_out = _pair_stream(random.Random(seed)), set()
    splits: dict[str, list[tuple[str, str]]] = {"valid": [], "test": [], "train": []}
    for split in ("valid", "test", "train"):
        while len(splits[split]) < counts[split]:
            src, tgt = next(stream)
            if src not in held_out:
                splits[split].append((src, tgt))
                if split != "train":
                    held_out.add(src)
    (out / "toy_corpus.json").unlink(missing_ok=True)  # stale until the rewrite completes
    for split, pairs in splits.items():
        for index, side in enumerate(("src", "tgt")):
            atomic_write_text(out / f"{split}.{side}", "".join(p[index] + "\n" for p in pairs))
    atomic_write_text(out / "toy_corpus.json", json.dumps(params, sort_keys=True) + "\n")
    return out
