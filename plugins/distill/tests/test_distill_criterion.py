"""Word-level KD: the loss on a hand case, zero against itself, a frozen teacher that never
moves, a vocabulary mismatch refused before training, and a student that decodes without the
plugin and records its teacher."""

from __future__ import annotations

import math

import pytest
import torch

from toolkit.checkpoint import CheckpointError, load_checkpoint
from toolkit.config import compose_train_config
from toolkit.criterions.distillation import distillation_loss
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.translator import Translator
from toolkit.inference import load_for_inference
from toolkit.plugins import load_plugins
from toolkit.training.train import train

import distill.plugin
from distill.criterion import WordDistillConfig, WordDistillCriterion
from distill.teacher import file_sha256

STUDENT = ["model.encoder_layers=1", "model.decoder_layers=1", "model.encoder_embed_dim=32",
           "model.decoder_embed_dim=32", "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64", "task.toy_pairs=600",
           "dataset.max_tokens=512", "common.log_format=none", "common.threads=1", "common.tensorboard_dir=null",
           "lr_scheduler.warmup_updates=5"]


def session():
    return load_plugins(autoload=False, extra=[("distill", distill.plugin)])


def test_the_loss_equals_a_hand_computation():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [9.0, 9.0, 9.0]])
    target = torch.tensor([0, 1, 2])  # 2: padding, ignored
    t = 2.0
    expected = 0.0
    for s_row, t_row in zip(student[:2], teacher[:2]):
        p = [math.exp(v / t) for v in t_row.tolist()]
        q = [math.exp(v / t) for v in s_row.tolist()]
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    loss = distillation_loss(student, teacher, target, t, ignore_index=2)
    assert loss.item() == pytest.approx(t * t * expected, rel=1e-5)


def test_the_loss_is_zero_when_the_student_is_the_teacher(trained_run):
    _, task, model, _ = load_for_inference(trained_run / "checkpoint_last.pt", device="cpu")
    criterion = WordDistillCriterion(WordDistillConfig(alpha=1.0, temperature=1.0, label_smoothing=0.0),
                                     task.tgt_dict.pad)
    criterion.set_teacher(model)
    src = torch.tensor([[5, 6, 7, task.src_dict.eos]])
    prev = torch.tensor([[task.tgt_dict.bos, 8, 9]])
    sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([4]), "prev_output_tokens": prev},
              "target": torch.tensor([[8, 9, task.tgt_dict.eos]]), "ntokens": 3, "nsentences": 1}
    loss, _, logged = criterion(model, sample)
    assert abs(loss.item()) < 1e-4 and abs(logged["distill_loss"].item()) < 1e-4


def test_the_teacher_in_memory_gets_no_gradient_and_never_moves(trained_run):
    """The teacher the plugin loads (frozen, eval mode) beside a student that takes optimizer
    steps on the KD loss: the student moves, the teacher's tensors get no gradient and keep
    their values."""
    from distill.teacher import load_teacher

    teacher_task, teacher = load_teacher(trained_run / "checkpoint_last.pt", torch.device("cpu"))
    before = {name: value.clone() for name, value in teacher.state_dict().items()}
    _, task, student, _ = load_for_inference(trained_run / "checkpoint1.pt", device="cpu")
    student.train()
    criterion = WordDistillCriterion(WordDistillConfig(alpha=0.5, temperature=2.0), task.tgt_dict.pad)
    criterion.set_teacher(teacher)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    src = torch.tensor([[5, 6, 7, task.src_dict.eos]])
    prev = torch.tensor([[task.tgt_dict.bos, 8, 9]])
    sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([4]), "prev_output_tokens": prev},
              "target": torch.tensor([[8, 9, task.tgt_dict.eos]]), "ntokens": 3, "nsentences": 1}
    student_before = [p.detach().clone() for p in student.parameters()]
    for _ in range(3):
        optimizer.zero_grad()
        criterion(student, sample)[0].backward()
        optimizer.step()
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert any(not torch.equal(p, q) for p, q in zip(student.parameters(), student_before))


def test_a_word_kd_student_trains_with_a_frozen_teacher_and_decodes_without_the_plugin(trained_run, tmp_path,
                                                                                       clean_config_store):
    teacher_path = trained_run / "checkpoint_last.pt"
    teacher_before = load_checkpoint(teacher_path)["model"]
    result = train(compose_train_config([
        *STUDENT, "criterion=word_distill", f"criterion.teacher={teacher_path}", "criterion.temperature=2.0",
        f"task.tokenizers_from={teacher_path}", "optimization.max_update=12", f"checkpoint.save_dir={tmp_path}"]),
        session())
    assert result["train_losses"][-1] < result["train_losses"][0]
    assert "distill_loss" in result["valid"][-1]  # validation reports the same loss
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    record = state["plugin_state"]["distill"]
    assert record["teacher_sha256"] == file_sha256(teacher_path) and record["temperature"] == 2.0
    assert state["plugins"]["roles"] == {"distill": "training"}
    for key, value in load_checkpoint(teacher_path)["model"].items():  # the teacher never moved
        assert torch.equal(value, teacher_before[key]), key
    core_only = load_plugins(autoload=False)
    translations = Translator.from_checkpoint(tmp_path / "checkpoint_last.pt", GenerationConfig(beam=2), "cpu",
                                              core_only).translate(["the dog sleeps"])
    assert len(translations) == 1


def test_a_teacher_with_another_vocabulary_is_refused_before_training(trained_run, tmp_path, clean_config_store):
    other = tmp_path / "other"  # a teacher whose vocabulary was trained on other settings
    train(compose_train_config([*STUDENT, "task.vocab_size=200", "optimization.max_update=1",
                                f"checkpoint.save_dir={other}"]), session())
    with pytest.raises(CheckpointError, match="another target vocabulary"):
        train(compose_train_config([*STUDENT, "criterion=word_distill", f"criterion.teacher={other / 'checkpoint_last.pt'}",
                                    "optimization.max_update=2", f"checkpoint.save_dir={tmp_path / 'student'}"]),
              session())
    assert not (tmp_path / "student" / "checkpoint_last.pt").exists()
    with pytest.raises(CheckpointError, match="does not exist"):
        train(compose_train_config([*STUDENT, "criterion=word_distill", f"criterion.teacher={tmp_path / 'none.pt'}",
                                    "optimization.max_update=2", f"checkpoint.save_dir={tmp_path / 'student2'}"]),
              session())


def test_an_ensemble_teacher_is_frozen_and_teaches_the_mean_of_its_members(trained_run):
    """teacher=a.pt:b.pt: both members frozen; the KD loss is the KL to the mean distribution,
    zero for a student that is that mean (the same model twice)."""
    from toolkit.models.ensemble import EnsembleModel

    from distill.teacher import load_teacher, teacher_sha256

    first, last = trained_run / "checkpoint1.pt", trained_run / "checkpoint_last.pt"
    _, teacher = load_teacher(f"{first}:{last}", torch.device("cpu"))
    assert isinstance(teacher, EnsembleModel) and len(teacher.members) == 2
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert teacher_sha256(f"{first}:{last}") not in (file_sha256(first), file_sha256(last), teacher_sha256(f"{last}:{first}"))

    _, task, model, _ = load_for_inference(last, device="cpu")
    src = torch.tensor([[5, 6, 7, task.src_dict.eos]])
    prev = torch.tensor([[task.tgt_dict.bos, 8, 9]])
    sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([4]), "prev_output_tokens": prev},
              "target": torch.tensor([[8, 9, task.tgt_dict.eos]]), "ntokens": 3, "nsentences": 1}
    criterion = WordDistillCriterion(WordDistillConfig(alpha=1.0, temperature=1.0, label_smoothing=0.0),
                                     task.tgt_dict.pad)
    criterion.set_teacher(EnsembleModel([model, model]))
    assert abs(criterion(model, sample)[0].item()) < 1e-4
    criterion.set_teacher(teacher)  # the mean of two different models is not the student
    assert criterion(model, sample)[0].item() > 1e-3
