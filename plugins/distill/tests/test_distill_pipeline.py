"""toolkit-distill end to end on a slice of the toy corpus: line-aligned corpus, resumable
teacher stage, stages skipped or redone by their inputs, a student that records its teacher."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from toolkit.checkpoint import load_checkpoint
from toolkit.data.preprocess import read_lines

from distill.cli import main as distill_main
from distill.teacher import file_sha256
from distill.translate import read_chunks, translate_corpus

STUDENT = ["student.model.encoder_layers=1", "student.model.decoder_layers=1", "student.optimization.max_update=8",
           "student.common.log_format=none", "student.common.threads=1", "student.common.tensorboard_dir=null",
           "student.dataset.max_tokens=512"]


def run(teacher, data, out, *extra) -> dict:
    args = [f"teacher={teacher}", f"data={data}", f"out={out}", "source_lang=src", "target_lang=tgt",
            "chunk_lines=100", "beam=2", *STUDENT, *extra]
    assert distill_main(args) == 0
    return {stage: json.loads((out / stage / "stamp.json").read_text()) for stage in
            ("translate", "corpus", "student", "evaluate") if (out / stage / "stamp.json").is_file()}


def test_sequence_kd_end_to_end_resumes_and_reruns_what_changed(trained_run, small_data, tmp_path, capsys,
                                                                clean_config_store):
    teacher, out = trained_run / "checkpoint_last.pt", tmp_path / "kd"
    first = run(teacher, small_data, out)
    sources = read_lines(small_data / "train.src")
    outputs = read_chunks(out / "translate")
    assert len(outputs) == 300 and outputs[7] == ""  # line-aligned; the empty source gave no output
    corpus_src, corpus_tgt = read_lines(out / "corpus" / "train.src"), read_lines(out / "corpus" / "train.tgt")
    assert corpus_src == [s for s, t in zip(sources, outputs) if s and t] and len(corpus_tgt) == len(corpus_src)
    assert first["corpus"]["dropped"] >= 1
    student = load_checkpoint(out / "student.pt")
    assert student["distilled_from"]["teacher_sha256"] == file_sha256(teacher)
    assert student["distilled_from"]["method"] == "sequence" and student["inference_only"]
    assert first["evaluate"]["beam5"]["sentences_per_s"] > 0

    capsys.readouterr()
    again = run(teacher, small_data, out)  # nothing changed: every stage skipped
    assert again == first

    (out / "translate" / "stamp.json").unlink()  # interrupted after two of three chunks
    (out / "translate" / "chunks" / "00002.txt").unlink()
    resumed = run(teacher, small_data, out)
    assert resumed["translate"]["translated_now"] == 100 and read_chunks(out / "translate") == outputs
    assert resumed["corpus"] == first["corpus"]

    (out / "student" / "old-run.txt").write_text("made from the old inputs")
    (small_data / "test.tgt").write_text((small_data / "test.tgt").read_text().replace("a", "b", 1))
    changed = run(teacher, small_data, out)  # a copied split changed: corpus and student redone
    assert changed["translate"] == resumed["translate"] and changed["student"]["key"] != first["student"]["key"]
    # the student trained again from scratch, not resumed from the old run's last checkpoint
    assert not (out / "student" / "old-run.txt").exists() and changed["student"]["num_updates"] == 8
    assert changed["student"]["seconds"] > 0 and changed["evaluate"]["key"] != first["evaluate"]["key"]

    capsys.readouterr()  # 8 updates in one epoch: one checkpoint, nothing to average
    with pytest.raises(SystemExit):
        run(teacher, small_data, out, "average=2")
    assert "average=2, but the student's run has 1 checkpoint(s) (checkpoint_last.pt)" in capsys.readouterr().err
    averaged = run(teacher, small_data, out, "average=2", "student.dataset.max_tokens=2048")  # epochs of 2 updates
    assert averaged["translate"] == changed["translate"] and averaged["corpus"] == changed["corpus"]
    shipped = load_checkpoint(out / "student.pt")
    names = shipped["distilled_from"]["averaged_from"]
    members = [load_checkpoint(out / "student" / name)["model"] for name in names]
    assert len(names) == 2 and len(set(names)) == 2
    key = "decoder.layers.0.ffn.fc1.weight"
    torch.testing.assert_close(shipped["model"][key], (members[0][key] + members[1][key]) / 2)
    assert not torch.equal(members[0][key], members[1][key])  # the mean differs from either member


def test_another_teacher_rebuilds_the_cache_and_bad_input_is_named(trained_run, small_data, tmp_path, capsys,
                                                                   clean_config_store):
    out = tmp_path / "kd"
    run(trained_run / "checkpoint_last.pt", small_data, out, "student.optimization.max_update=2")
    other = tmp_path / "other.pt"
    shutil.copyfile(trained_run / "checkpoint1.pt", other)
    rebuilt = run(other, small_data, out, "student.optimization.max_update=2")
    assert rebuilt["translate"]["translated_now"] == 300  # none of the old teacher's chunks reused

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(other.read_bytes()[:5000])
    chunks_before = sorted(p.read_text() for p in (out / "translate" / "chunks").glob("*.txt"))
    for args, message in [
        ([f"teacher={tmp_path / 'missing.pt'}", f"data={small_data}", f"out={out}"], "does not exist"),
        ([f"teacher={corrupt}", f"data={small_data}", f"out={out}"], "the teacher: cannot read checkpoint"),
        ([f"teacher={other}", f"data={tmp_path}", f"out={out}", "source_lang=src", "target_lang=tgt"],
         "has no train.src"),
        ([f"teacher={other}", f"data={small_data}"], "missing out="),
        ([f"teacher={other}", f"data={small_data}", f"out={out}", "beams=3"], "unknown setting 'beams'"),
        ([f"teacher={other}", f"data={small_data}", f"out={out}", "average=0"], "at least 1, got 0"),
    ]:
        with pytest.raises(SystemExit):
            distill_main(args)
        assert message in capsys.readouterr().err
    # nothing lost: the cached translation of the last good teacher is still there
    assert sorted(p.read_text() for p in (out / "translate" / "chunks").glob("*.txt")) == chunks_before


def test_real_targets_baseline_student_of_the_registered_shape_and_its_table(trained_run, small_data, tmp_path,
                                                                            capsys, clean_config_store):
    """method=real: the baseline row (original targets, plain criterion, no teacher stage) of a
    transformer_student; distill.results decodes it beside the teacher, distill.plot draws it."""
    from toolkit.checkpoint import required_plugins

    from distill.results import main as results_main

    teacher, out = trained_run / "checkpoint_last.pt", tmp_path / "real"
    records = run(teacher, small_data, out, "method=real", "student.model=transformer_student",
                  "student.model.encoder_embed_dim=64", "student.model.decoder_embed_dim=64")
    assert "translate" not in records and not (out / "translate").exists()
    pairs = [(s, t) for s, t in zip(read_lines(small_data / "train.src"), read_lines(small_data / "train.tgt")) if s]
    assert read_lines(out / "corpus" / "train.tgt") == [t for _, t in pairs]
    student = load_checkpoint(out / "student.pt")
    assert student["cfg"]["model"]["arch"] == "transformer_student" and student["cfg"]["criterion"]["_name"] != "word_distill"
    assert student["cfg"]["model"]["decoder_layers"] == 1  # the shape's (the encoder's 3 blocks are overridden here)
    assert required_plugins(student, for_inference=True) == []  # the shape is a preset: decodes without distill
    assert all(records[stage]["seconds"] >= 0 for stage in ("corpus", "student", "evaluate"))

    capsys.readouterr()
    output = tmp_path / "results.json"
    assert results_main([f"real={out}", "--teacher", str(teacher), "--data", str(small_data), "--source-lang", "src",
                         "--target-lang", "tgt", "--rounds", "1", "--threads", "1", "--output", str(output)]) == 0
    rows = json.loads(output.read_text())["rows"]
    assert [(r["model"], r["search"]) for r in rows] == [("teacher", "beam5"), ("real", "beam5"), ("real", "greedy")]
    assert rows[0]["vs_teacher"] == 1.0 and rows[1]["stages"]["updates"] == 8
    assert rows[1]["parameters"] < rows[0]["parameters"] or rows[1]["bytes"] != rows[0]["bytes"]
    assert "| real | greedy |" in capsys.readouterr().out
    # an ensemble teacher ("a.pt:b.pt"): its bytes and parameters are its members' together
    ensemble_output = tmp_path / "results_ensemble.json"
    assert results_main([f"real={out}", "--teacher", f"{teacher}:{teacher}", "--data", str(small_data), "--source-lang",
                         "src", "--target-lang", "tgt", "--rounds", "1", "--threads", "1",
                         "--output", str(ensemble_output)]) == 0
    ensemble_teacher = json.loads(ensemble_output.read_text())["rows"][0]
    assert ensemble_teacher["bytes"] == 2 * teacher.stat().st_size == 2 * rows[0]["bytes"]
    assert ensemble_teacher["parameters"] == 2 * rows[0]["parameters"]

    pytest.importorskip("matplotlib")
    from distill.plot import main as plot_main

    assert plot_main([str(output), "--output", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_the_ctranslate2_engine_rebuilds_the_export_of_another_teacher(trained_run, small_data, tmp_path):
    """engine=ctranslate2: the teacher's export is made once per teacher; the stage of another
    teacher gets its export and chunks rebuilt, and decodes as the new teacher alone does."""
    pytest.importorskip("ctranslate2")
    from toolkit.export.ctranslate2 import export_checkpoint

    from distill.stages import run_stage

    sources = read_lines(small_data / "train.src")[:40]

    def stage(folder, teacher, key):
        return run_stage(folder, "translate", key, lambda f: translate_corpus(
            sources, f, teacher, beam=2, batch=16, max_tokens=512, chunk_lines=20, engine="ctranslate2"))

    folder, new = tmp_path / "translate", trained_run / "checkpoint_last.pt"
    stage(folder, trained_run / "checkpoint1.pt", "old")
    record = stage(folder, new, "new")
    assert record["translated_now"] == 40  # no chunk of the old teacher kept
    fresh = export_checkpoint(new, tmp_path / "fresh.ct2")
    assert (folder / "teacher.ct2" / "model.bin").read_bytes() == (fresh / "model.bin").read_bytes()
    alone = stage(tmp_path / "alone", new, "new")
    assert read_chunks(folder) == read_chunks(tmp_path / "alone") and alone["skipped_too_long"] == 0


def test_the_seed_summary_groups_students_by_name_and_averages_their_greedy_gap():
    """Students named GROUP:SEED are summarised per group: each seed's greedy - beam 5, mean, sd."""
    from distill.results import seed_summary

    def rows(model, beam5, greedy):
        return [{"model": model, "search": "beam5", "bleu": beam5}, {"model": model, "search": "greedy", "bleu": greedy}]

    table = rows("teacher", 40.0, 40.0)[:1] + rows("seq:1", 34.0, 33.5) + rows("seq:2", 35.0, 34.9) + rows("real", 30.0, 29.0)
    assert seed_summary(table).splitlines()[2] == "| seq | 1, 2 | 34.50 | 34.20 | -0.50, -0.10 | -0.30 | 0.28 |"
    assert seed_summary(rows("real", 30.0, 29.0)) == ""


@pytest.mark.parametrize("engine", ["toolkit", "ctranslate2"])
def test_interpolation_writes_the_beam_hypothesis_closest_to_the_target(trained_run, small_data, tmp_path, engine):
    """interpolate=true (Kim and Rush's sequence-level interpolation): each line is, of the
    teacher's whole beam, the hypothesis of highest sentence BLEU against the original target."""
    if engine == "ctranslate2":
        pytest.importorskip("ctranslate2")
    from sacrebleu import sentence_bleu

    from toolkit.generation.generator import GenerationConfig
    from toolkit.generation.translator import Translator

    teacher = trained_run / "checkpoint_last.pt"
    sources, targets = read_lines(small_data / "train.src")[:60], read_lines(small_data / "train.tgt")[:60]
    decode = dict(beam=4, batch=16, max_tokens=512, chunk_lines=25, engine=engine)
    translate_corpus(sources, tmp_path / "top", teacher, **decode)
    translate_corpus(sources, tmp_path / "inter", teacher, references=targets, **decode)
    top, chosen = read_chunks(tmp_path / "top"), read_chunks(tmp_path / "inter")
    assert len(chosen) == 60 and chosen[7] == "" and top[7] == ""  # still line-aligned, the empty source skipped

    def similarity(lines):
        return sum(sentence_bleu(line, [target]).score for line, target in zip(lines, targets))

    assert sum(a != b for a, b in zip(top, chosen)) >= 5 and similarity(chosen) > similarity(top) + 20
    if engine == "toolkit":  # against the teacher's own 4-best, scored here
        translator = Translator.from_checkpoint(teacher, GenerationConfig(beam=4, nbest=4), "cpu")
        for i, translation in enumerate(translator.translate(sources)):
            if sources[i]:
                texts = [translator.task.tgt_tokenizer.decode(h.tokens.tolist()) for h in translation.hypotheses]
                best = max(sentence_bleu(text, [targets[i]]).score for text in texts)
                assert sentence_bleu(chosen[i], [targets[i]]).score == best and chosen[i] in texts
    translate_corpus(sources, tmp_path / "pooled", teacher, references=targets, workers=2, **decode)
    assert read_chunks(tmp_path / "pooled") == chosen  # two decoding processes: the same lines
    with pytest.raises(Exception, match="60 training sources but 59 targets"):
        translate_corpus(sources, tmp_path / "bad", teacher, references=targets[:59], **decode)


def test_interpolation_needs_the_teachers_outputs(trained_run, small_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        distill_main([f"teacher={trained_run / 'checkpoint_last.pt'}", f"data={small_data}", f"out={tmp_path / 'kd'}",
                      "source_lang=src", "target_lang=tgt", "method=word", "interpolate=true"])
    assert "interpolate=true chooses among the teacher's outputs: it needs method=sequence or both" in capsys.readouterr().err
    assert not (tmp_path / "kd").exists()


def test_an_ensemble_teacher_translates_as_the_mean_of_its_members(trained_run, small_data, tmp_path, capsys,
                                                                   clean_config_store):
    from toolkit.generation.generator import GenerationConfig
    from toolkit.generation.translator import Translator

    from distill.teacher import teacher_sha256

    members = [trained_run / "checkpoint1.pt", trained_run / "checkpoint_last.pt"]
    teacher, out = ":".join(str(p) for p in members), tmp_path / "kd"
    run(teacher, small_data, out, "student.optimization.max_update=2")
    sources = read_lines(small_data / "train.src")[:50]
    expected = Translator.from_checkpoint(members, GenerationConfig(beam=2)).translate(sources)
    assert read_chunks(out / "translate")[:50] == [t.text for t in expected]
    assert load_checkpoint(out / "student.pt")["distilled_from"]["teacher_sha256"] == teacher_sha256(teacher)

    capsys.readouterr()
    with pytest.raises(SystemExit):
        distill_main([f"teacher={teacher}", f"data={small_data}", f"out={out}", "engine=ctranslate2"])
    assert "an ensemble teacher (2 checkpoints) needs engine=toolkit" in capsys.readouterr().err
