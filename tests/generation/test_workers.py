"""Decoding with forked worker processes (``Translator(workers=N)``): the same translations and
exit statistics as one process, the batches really decoded elsewhere, bad settings named."""

import os
import signal

import pytest
import torch

from toolkit.data.preprocess import read_lines
from toolkit.errors import ConfigError
from toolkit.generation.generator import GenerationConfig
from toolkit.generation.translator import Translator
from toolkit.inference import load_for_inference
from toolkit.generation.workers import check_workers


@pytest.fixture(scope="module")
def loaded(trained_run):
    _, task, model, _ = load_for_inference(trained_run / "checkpoint_last.pt")
    sources = read_lines(trained_run / "data-bin" / "toy-text" / "test.src")[:70] + [""]
    return task, model, sources


def outputs(translations):
    return [(t.text, [h.tokens.tolist() for h in t.hypotheses], [round(h.score, 5) for h in t.hypotheses])
            for t in translations]


@pytest.mark.parametrize("exit_policy", [None, {"_name": "fixed_depth", "block": 1}])
def test_workers_give_the_translations_and_exit_counts_of_one_process(loaded, exit_policy):
    task, model, sources = loaded
    config = GenerationConfig(beam=3, nbest=2, exit_policy=exit_policy)
    alone = Translator(task, model, config, max_sentences=8)
    pooled = Translator(task, model, config, max_sentences=8, workers=2)
    try:
        expected, got = outputs(alone.translate(sources)), outputs(pooled.translate(sources))
        assert got == expected and got[-1] == ("", [], [])  # in input order, the empty line kept
        assert torch.equal(pooled.generator.exit_counts, alone.generator.exit_counts)
        assert pooled.generator.projected_rows == alone.generator.projected_rows > 0
        assert outputs(pooled.translate(sources[:5])) == expected[:5]  # the same workers again
    finally:
        pooled.close()


def test_the_batches_are_decoded_in_other_processes(loaded):
    task, model, sources = loaded
    pooled = Translator(task, model, GenerationConfig(beam=2), max_sentences=8, workers=2)
    decoded_in = []
    generate = pooled.generator.generate

    def recording(*args):
        decoded_in.append(os.getpid())  # appended in the process that decodes
        return generate(*args)

    pooled.generator.generate = recording  # the workers fork with it
    try:
        assert len(pooled.translate(sources)) == len(sources) and decoded_in == []
        processes = list(pooled._pool._pool._processes.values())
        assert len(processes) == 2 and all(p.is_alive() and p.pid != os.getpid() for p in processes)
    finally:
        pooled.close()
    assert all(not p.is_alive() for p in processes)


def test_a_worker_that_dies_is_a_clear_error_not_a_hang(loaded):
    task, model, sources = loaded
    pooled = Translator(task, model, GenerationConfig(beam=2), max_sentences=8, workers=2)
    try:
        pooled.translate(sources[:16])
        os.kill(next(iter(pooled._pool._pool._processes)), signal.SIGKILL)
        with pytest.raises(RuntimeError, match="a decoding worker process died"):
            pooled.translate(sources)
        assert len(pooled.translate(sources[:16])) == 16  # new workers
    finally:
        pooled.close()


def test_bad_worker_settings_are_named(loaded):
    task, model, _ = loaded
    with pytest.raises(ConfigError, match="workers must be >= 1, got 0"):
        Translator(task, model, GenerationConfig(), workers=0)
    with pytest.raises(ConfigError, match="decoding workers run on the CPU; the model is on cuda"):
        check_workers(2, "cuda")
    check_workers(1, "cuda")  # one process: wherever the model is
