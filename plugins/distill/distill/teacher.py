"""Loading a teacher: once, frozen, on a device, its target vocabulary checked against the student's.

A teacher is one checkpoint, or an ensemble of several that share their tokenizers, named
``a.pt:b.pt`` (``toolkit.inference.checkpoint_paths``): it decodes, and gives word-level KD its
distribution, as the mean of the members' probabilities."""

from __future__ import annotations

import hashlib
import os

import torch

from toolkit.checkpoint import CheckpointError
from toolkit.inference import checkpoint_paths, load_ensemble_for_inference
from toolkit.plugins import PluginSession


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def teacher_sha256(teacher: str | os.PathLike) -> str:
    """The content hash of a teacher: its file's, or for an ensemble the hash of its members'
    hashes in order (a cache made by another teacher, or another ensemble, is not reused)."""
    hashes = [file_sha256(path) for path in checkpoint_paths(teacher)]
    return hashes[0] if len(hashes) == 1 else hashlib.sha256(" ".join(hashes).encode()).hexdigest()


def load_teacher(path: str | os.PathLike, device: torch.device, plugins: PluginSession | None = None):
    """``(task, model)``: the teacher (an ``EnsembleModel`` for several checkpoints) in eval
    mode on ``device``, every parameter frozen.

    :raises CheckpointError: a missing or unreadable file (named).
    """
    paths = checkpoint_paths(path)
    for member in paths:
        if not member.is_file():
            raise CheckpointError(f"teacher checkpoint {member} does not exist")
    _, task, model, _ = load_ensemble_for_inference(paths, plugins, device=str(device))
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
