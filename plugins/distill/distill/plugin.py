"""The distill plugin's hooks: the word_distill criterion, its teacher, the student's record."""

from __future__ import annotations

import dataclasses
import logging

from toolkit import hookimpl
from toolkit.models.architectures import transformer_small
from toolkit.models.transformer import TransformerConfig

from distill.criterion import WordDistillConfig, WordDistillCriterion
from distill.teacher import check_vocabulary, load_teacher, teacher_sha256

NAME = "distill"
logger = logging.getLogger(__name__)


@hookimpl
def toolkit_register(registries) -> None:
    registries.criterion.add("word_distill", WordDistillCriterion, WordDistillConfig)
    registries.register_architecture("transformer", "transformer_student")(transformer_student)


def transformer_student() -> TransformerConfig:
    """The Multi30k students: ``transformer_small``'s 3-block encoder with a 1-block decoder
    (decoding cost is in the decoder; a distilled student needs little depth there)."""
    return dataclasses.replace(transformer_small(), decoder_layers=1)


@hookimpl
def toolkit_train_begin(trainer) -> None:
    """Load the teacher of a word_distill run once, on the trainer's device, before any step."""
    criterion = trainer.criterion
    if not isinstance(criterion, WordDistillCriterion):
        return
    path = criterion.cfg.teacher
    teacher_task, teacher = load_teacher(path, trainer.device, trainer.plugins)
    check_vocabulary(teacher_task, trainer.task, path)
    criterion.set_teacher(teacher)
    criterion.record = {"method": "word", "teacher": str(path), "teacher_sha256": teacher_sha256(path),
                        "alpha": criterion.cfg.alpha, "temperature": criterion.cfg.temperature}
    logger.info("teacher %s: %s parameters, frozen, on %s", path, f"{teacher.num_parameters():,}", trainer.device)


@hookimpl
def toolkit_checkpoint_state(trainer):
    """The student's checkpoints record how it was made (teacher path and content hash, T, alpha)."""
    record = getattr(trainer.criterion, "record", None)
    return {NAME: record} if record else None
