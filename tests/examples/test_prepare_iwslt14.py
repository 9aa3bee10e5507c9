import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("sacremoses")
ROOT = Path(__file__).parents[2]
SHARED = ROOT.parent / "shared" / "data" / "iwslt14-de-en"
spec = importlib.util.spec_from_file_location("prepare_iwslt14", ROOT / "examples/translation/prepare_iwslt14.py")
prepare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare)


def write_release(orig: Path, pairs: int = 50) -> None:
    orig.mkdir()
    for lang, word in (("de", "Haus"), ("en", "House")):
        lines = ["<url>http://x</url>", "<keywords>talk</keywords>", f"<title>The {word}</title>"]
        lines += [f"{word} number {i}, I'm here." for i in range(pairs)]
        lines.append(f"{word} " * 200)  # over-long: cleaned away
        (orig / f"train.tags.de-en.{lang}").write_text("\n".join(lines) + "\n")
        for name in prepare.TEST_SETS:
            segs = "".join(f'<seg id="{i}"> {name[-4:]} {word}’s U.S.A. </seg>\n' for i in range(2))
            (orig / f"{name}.de-en.{lang}.xml").write_text(f"<doc>\n{segs}</doc>\n")


def test_the_split_follows_fairseq(tmp_path):
    write_release(tmp_path / "orig")
    prepare.main(["--orig", str(tmp_path / "orig"), "--out", str(tmp_path / "out")])
    read = lambda name: (tmp_path / "out" / name).read_text().splitlines()  # noqa: E731
    train, valid = read("train.en"), read("valid.en")
    assert len(train) + len(valid) == 51  # the title line stays, tags stripped; url/keywords and the long line go
    assert valid == [line for n, line in enumerate(["the house"] + [f"house number {i} , i &apos;m here ." for i in range(50)], 1) if n % 23 == 0]
    assert all(line == line.lower() for line in train)
    test = read("test.en")  # dev2010, TEDX.dev2012, tst2010, ...; ’ -> ', line-final period split
    assert len(test) == 10 and test[0] == "2010 house &apos;s u.s.a ." and test[2].startswith("2012")
    assert read("test.de")[0] == "2010 haus &apos; s u.s.a ."  # German Moses rules split the apostrophe
    assert len(read("train.de")) == len(train)


@pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared/data/iwslt14-de-en")
def test_the_real_test_set_is_reproduced_byte_for_byte(tmp_path):
    prepare.main(["--orig", str(SHARED / "orig"), "--out", str(tmp_path), "--test-only"])
    for lang in ("de", "en"):
        assert (tmp_path / f"test.{lang}").read_bytes() == (SHARED / f"test.{lang}").read_bytes()
