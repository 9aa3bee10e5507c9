"""The tuner's paired bootstrap: sentence statistics sum to sacreBLEU's corpus BLEU, and the
chance of staying within the drop separates a setting equal to full depth from a worse one."""

from __future__ import annotations

import numpy as np
import pytest

from depth_adaptive.significance import chance_within, corpus_bleu, sentence_statistics
from depth_adaptive.tune import choose
from toolkit.scoring.bleu import score

REFERENCES = [f"a small dog number {i} runs across the green field ." for i in range(40)]
GOOD = [f"a small dog number {i} runs across the field ." for i in range(40)]
BAD = [f"the dog {i} is here" for i in range(40)]


def test_summed_sentence_statistics_give_sacrebleus_corpus_bleu():
    for hypotheses in (GOOD, BAD):
        statistics = sentence_statistics(hypotheses, REFERENCES)
        assert statistics.shape == (40, 10)
        assert corpus_bleu(statistics.sum(0)) == pytest.approx(score(hypotheses, REFERENCES).bleu)


def test_the_chance_separates_an_equal_setting_from_a_worse_one():
    good, bad = sentence_statistics(GOOD, REFERENCES), sentence_statistics(BAD, REFERENCES)
    assert chance_within(good, good, max_drop=0.3) == 1.0
    assert chance_within(bad, good, max_drop=0.3) == 0.0
    # half the sentences worse: the chance grows with the allowed drop
    mixed = np.concatenate([good[:20], bad[20:]])
    gap = corpus_bleu(good.sum(0)) - corpus_bleu(mixed.sum(0))
    assert chance_within(mixed, good, max_drop=gap / 2) < 0.5 < chance_within(mixed, good, max_drop=gap * 1.5)
    with pytest.raises(ValueError, match="statistics of 20 and 40 sentences"):
        chance_within(good[:20], good, max_drop=0.3)


def test_choose_with_a_chance_skips_settings_within_the_drop_only_by_luck():
    points = [{"threshold": 0.2, "bleu": 32.8, "cost": 3.3, "chance": 0.55},
              {"threshold": 0.5, "bleu": 33.9, "cost": 4.0, "chance": 0.99}]
    assert choose(points, full_bleu=33.0, max_drop=0.3)["threshold"] == 0.2
    assert choose(points, full_bleu=33.0, max_drop=0.3, chance=0.9)["threshold"] == 0.5


def test_a_chance_outside_zero_one_is_refused_before_any_work(tmp_path, capsys):
    from depth_adaptive.tune import main as tune_exits

    output = tmp_path / "tuned.json"
    assert tune_exits([str(tmp_path / "missing.pt"), "--policy", "halting", "--output", str(output),
                       "--chance", "1.5"]) == 1
    assert "--chance must be in (0, 1], got 1.5" in capsys.readouterr().err and not output.exists()


def test_refinement_bisects_to_the_cheapest_threshold_that_qualifies():
    from depth_adaptive.tune import qualifies, refine_threshold

    def measure(settings: dict) -> dict:  # cost grows with the threshold; below 0.13 BLEU falls off
        t = settings["threshold"]
        return {**settings, "cost": 1 + 5 * t, "bleu": 33.0 if t >= 0.13 else 32.0}

    points = [measure({"threshold": t}) for t in (0.05, 0.2, 0.5, 0.8)]
    refined = refine_threshold(points, measure, lambda p: qualifies(p, 33.0, 0.3, None), steps=5)
    assert [p["threshold"] for p in refined] == pytest.approx([0.125, 0.1625, 0.1437, 0.1343, 0.1296], abs=2e-4)
    best = choose(points + refined, full_bleu=33.0, max_drop=0.3)
    assert 0.13 <= best["threshold"] <= 0.13 + 0.15 / 2 ** 5  # the draw alone chose 0.2
    # nothing qualifies, or nothing cheaper fails: no boundary, no decoding
    assert refine_threshold(points[:1], measure, lambda p: qualifies(p, 33.0, 0.3, None), steps=5) == []
    assert refine_threshold(points[1:], measure, lambda p: qualifies(p, 33.0, 0.3, None), steps=5) == []


def test_refinement_is_refused_for_policies_with_a_threshold_per_block(tmp_path, capsys):
    from depth_adaptive.tune import main as tune_exits

    output = tmp_path / "tuned.json"
    assert tune_exits([str(tmp_path / "missing.pt"), "--policy", "confidence", "--output", str(output),
                       "--refine", "3"]) == 1
    assert "--refine bisects one threshold: policy halting, not confidence" in capsys.readouterr().err
    assert not output.exists()
    assert tune_exits([str(tmp_path / "missing.pt"), "--policy", "halting", "--output", str(output),
                       "--refine", "-1"]) == 1
    assert "--refine must be >= 0, got -1" in capsys.readouterr().err and not output.exists()
