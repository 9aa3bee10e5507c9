"""Loading a teacher: once, frozen, on a device, its target vocabulary checked against the student's."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from toolkit.checkpoint import CheckpointError
from toolkit.inference import load_for_inference
from toolkit.plugins import PluginSession


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_teacher(path: str | os.PathLike, device: torch.device, plugins: PluginSession | None = None):
    """``(task, model)``: the teacher in eval mode on ``device``, every parameter frozen.

    :raises CheckpointError: a missing or unreadable file (named).
    """
    if not Path(path).is_file():
        raise CheckpointError(f"teacher checkpoint {path} does not exist")
    _, task, model, _ = load_for_inference(path, plugins, device=str(device))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return task, model.eval()


def check_vocabulary(teacher_task, student_task, teacher_path: str | os.PathLike) -> None:
    """The teacher's distributions are over the student's target words, or nothing makes sense."""
    teacher_words, student_words = teacher_task.tgt_dict, student_task.tgt_dict
    if len(teacher_words) != len(student_words) or teacher_words != student_words:
        raise CheckpointError(f"the teacher {teacher_path} has another target vocabulary ({len(teacher_words)} words) "
                              f"than the student ({len(student_words)} words): train the student on data binarized "
                              f"with the teacher's tokenizers (task.tokenizers_from={teacher_path})")
