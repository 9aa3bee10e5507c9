"""toolkit-distill as two real torch.distributed processes (gloo, as torchrun starts them): each
rank translates its shard of the chunks, the student trains data-parallel, rank 0 evaluates;
the sharded outputs equal one process's."""

from __future__ import annotations

import json
import os

import torch
import torch.multiprocessing as mp

from toolkit.data.preprocess import read_lines
from toolkit.testing import free_port

from distill.cli import main as distill_main
from distill.translate import read_chunks, translate_corpus


def _worker(rank: int, world: int, port: int, args: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert distill_main(args) == 0


def test_two_ranks_share_the_teacher_and_the_student(trained_run, small_data, tmp_path, clean_config_store):
    from test_distill_pipeline import STUDENT

    teacher, out = trained_run / "checkpoint_last.pt", tmp_path / "kd"
    args = [f"teacher={teacher}", f"data={small_data}", f"out={out}", "source_lang=src", "target_lang=tgt",
            "chunk_lines=100", "beam=2", *STUDENT, "student.optimization.max_update=4"]
    mp.start_processes(_worker, args=(2, free_port(), args), nprocs=2, start_method="spawn")

    translated = json.loads((out / "translate" / "stamp.json").read_text())
    assert translated["translated_now"] == 300 and translated["per_rank"] == [200, 100]  # chunks 0, 2 | 1
    single = tmp_path / "single"
    translate_corpus(read_lines(small_data / "train.src"), single, teacher, beam=2, batch=64, max_tokens=4096,
                     chunk_lines=100)
    assert read_chunks(out / "translate") == read_chunks(single)
    student = json.loads((out / "student" / "stamp.json").read_text())
    assert student["num_updates"] == 4
    assert json.loads((out / "evaluate" / "stamp.json").read_text())["beam5"]["bleu"] >= 0
    assert (out / "student.pt").is_file()
