"""The beam's candidate selection by vocabulary chunks equals a top-k over every continuation."""

import pytest
import torch

from toolkit.generation import search
from toolkit.generation.search import BeamSearch, BeamSearchConfig, best_continuations


def full_topk(lprobs: torch.Tensor, scores: torch.Tensor, count: int):
    batch, _, vocab = lprobs.shape
    total = (lprobs + scores[:, :, None]).view(batch, -1)
    cand_scores, flat = total.topk(min(count, total.size(1)), dim=1)
    return cand_scores, flat % vocab, flat // vocab


@pytest.mark.parametrize("batch,beam,vocab", [(6, 5, 8000), (3, 5, 8003), (2, 1, 500), (4, 4, 37), (5, 3, 130)])
def test_chunked_candidates_equal_the_full_topk(batch, beam, vocab):
    generator = torch.Generator().manual_seed(vocab)
    lprobs = torch.log_softmax(3 * torch.randn(batch, beam, vocab, generator=generator), -1)
    scores = torch.randn(batch, beam, generator=generator)
    lprobs[0, -1] = float("-inf")  # a hypothesis forced to one token (its length limit)
    lprobs[0, -1, vocab // 2] = -1.0
    want_scores, want_tokens, want_beams = full_topk(lprobs, scores, 2 * beam)
    got_scores, got_tokens, got_beams = best_continuations(lprobs, scores, 2 * beam)
    assert torch.equal(got_scores, want_scores)
    finite = want_scores > float("-inf")  # among -inf candidates any order is a tie
    assert torch.equal(got_tokens[finite], want_tokens[finite]) and torch.equal(got_beams[finite], want_beams[finite])


def test_the_best_continuations_sit_in_one_chunk_and_across_hypotheses():
    """All 2K winners in one chunk of one hypothesis, then spread over the last chunk of each."""
    batch, beam, vocab = 1, 3, 4 * search.CHUNK + 10
    lprobs = torch.full((batch, beam, vocab), -50.0)
    lprobs[0, 1, 70:76] = torch.arange(6.0) - 10  # six winners inside chunk 1 of hypothesis 1
    got = best_continuations(lprobs, torch.zeros(batch, beam), 6)
    assert got[1].tolist() == [[75, 74, 73, 72, 71, 70]] and got[2].tolist() == [[1] * 6]
    lprobs = torch.full((batch, beam, vocab), -50.0)
    lprobs[0, :, -2:] = torch.tensor([-3.0, -4.0])  # the padded last chunk of every hypothesis
    got = best_continuations(lprobs, torch.tensor([[0.0, -0.5, -1.25]]), 6)
    assert got[0].tolist() == [[-3.0, -3.5, -4.0, -4.25, -4.5, -5.25]]
    assert got[1].tolist() == [[vocab - 2, vocab - 2, vocab - 1, vocab - 2, vocab - 1, vocab - 1]]
    assert got[2].tolist() == [[0, 1, 0, 2, 1, 2]]


def test_the_first_step_expands_the_first_hypothesis_only():
    lprobs = torch.log_softmax(torch.randn(2, 4, 8000), -1)  # enough chunks for the chunked path
    cand_scores, _, cand_beams = BeamSearch(BeamSearchConfig()).step(0, lprobs, torch.zeros(2, 4))
    assert cand_beams.eq(0).all() and cand_scores.shape == (2, 8)
