"""Halting classifiers, the oracles they learn from, their loss, and the ``halting`` policy."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from depth_adaptive.criterion import DepthAdaptiveCriterion, DepthAdaptiveCriterionConfig
from depth_adaptive.halting import HaltingHead, geometric_log_q
from depth_adaptive.oracles import sequence_oracle, smooth_over_time, token_oracle, token_scores
from depth_adaptive.plugin import toolkit_weights_loaded
from depth_adaptive.policies import HaltingConfig, HaltingExit
from toolkit.errors import ConfigError
from toolkit.generation.exit_policy import ExitStep
from toolkit.models.base import EncoderOutput

from da_testing import BLOCKS, VOCAB, tiny_batch, tiny_model


def test_geometric_q_sums_to_one_and_matches_a_hand_computation():
    chi = torch.tensor([0.2, 0.5, 0.9])  # chi^1..chi^3 of a 4-block decoder
    q = geometric_log_q(chi.log(), (1 - chi).log()).exp()
    by_hand = [0.2, 0.8 * 0.5, 0.8 * 0.5 * 0.9, 0.8 * 0.5 * 0.1]
    assert q.tolist() == pytest.approx(by_hand)
    head = HaltingHead("token_geometric", BLOCKS, 32, 32)
    torch.nn.init.normal_(head.weight)
    states = [torch.randn(2, 5, 32) for _ in range(BLOCKS)]
    assert torch.allclose(head.geometric_log_q(states).exp().sum(-1), torch.ones(2, 5))


def test_geometric_hidden_layer_matches_a_hand_computation_and_adds_its_parameters():
    linear = HaltingHead("token_geometric", BLOCKS, 32, 32)
    deep = HaltingHead("token_geometric", BLOCKS, 32, 32, hidden=8)
    added = sum(p.numel() for p in deep.parameters()) - sum(p.numel() for p in linear.parameters())
    assert added == (BLOCKS - 1) * (32 * 8 + 8) - (BLOCKS - 1) * (32 - 8)  # U_n, c_n; w_n shrinks to K
    torch.nn.init.normal_(deep.weight)
    torch.nn.init.normal_(deep.hidden_bias)
    h = torch.randn(3, 32)
    by_hand = torch.relu(h @ deep.hidden_weight[1] + deep.hidden_bias[1]) @ deep.weight[1] + deep.bias[1]
    assert torch.allclose(deep.chi_logit(h, 1), by_hand)
    states = [torch.randn(2, 5, 32) for _ in range(BLOCKS)]
    assert torch.allclose(deep.geometric_log_q(states).exp().sum(-1), torch.ones(2, 5))
    with pytest.raises(ConfigError, match="halting_hidden"):
        HaltingHead("token_multinomial", BLOCKS, 32, 32, hidden=8)


def test_oracles_on_a_hand_case():
    # one sentence, 3 tokens, 3 blocks; log-likelihood of the gold token per block
    ll = torch.tensor([[[-3.0, -1.0, -0.9], [-0.5, -0.4, -0.3], [-4.0, -3.0, -0.1]]])
    keep = torch.ones(1, 3, dtype=torch.bool)
    assert sequence_oracle(ll, keep, lam=0.0).tolist() == [2]  # totals -7.5, -4.4, -1.3
    assert sequence_oracle(ll, keep, lam=2.0).tolist() == [2]  # -9.5, -8.4, -7.3
    assert sequence_oracle(ll, keep, lam=4.0).tolist() == [0]  # -11.5, -12.4, -13.3
    assert sequence_oracle(torch.zeros(1, 3, 3), keep, lam=0.0).tolist() == [0]  # a tie goes to the shallowest
    assert token_oracle(ll, keep, lam=0.0, sigma=0.0).tolist() == [[2, 2, 2]]
    assert token_oracle(ll, keep, lam=0.15, sigma=0.0).tolist() == [[1, 0, 2]]  # -1.15 vs -1.2; -0.65 vs -0.7
    # with the kernel, token 2 borrows its neighbours' evidence: kappa(1,2)=kappa(2,3)=e^-1 for sigma=1
    smoothed = smooth_over_time(ll, keep, sigma=1.0)
    e = math.exp(-1.0)
    assert smoothed[0, 1, 0].item() == pytest.approx(-0.5 + e * (-3.0 - 4.0))
    assert token_oracle(ll, keep, lam=0.15, sigma=1.0).tolist() == [[2, 2, 2]]
    # padding takes no part
    padded = torch.tensor([[True, True, False]])
    assert smooth_over_time(ll, padded, 1.0)[0, 1, 0].item() == pytest.approx(-0.5 + e * -3.0)
    # correctness: argmax == gold per block
    lprobs = torch.log_softmax(torch.tensor([[[[2.0, 0.0], [0.0, 2.0]]]]), -1)  # (1, 1 token, 2 blocks, 2 words)
    assert token_scores(lprobs, torch.tensor([[1]]), "correctness").tolist() == [[[0.0, 1.0]]]


@pytest.mark.parametrize("kind", ["sequence", "token_multinomial", "token_geometric"])
def test_halting_loss_trains_the_classifier_only(kind):
    sample = tiny_batch()
    plain, halted = tiny_model(), tiny_model()
    halted.halting = HaltingHead(kind, BLOCKS, 32, 32)
    criterion = DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(halting_weight=10.0), VOCAB.pad).train()
    loss_plain, _, _ = criterion(plain, sample)
    loss_halted, _, logging_output = criterion(halted, sample)
    assert loss_halted.item() > loss_plain.item() and logging_output["exit_loss"].item() > 0
    assert 1 <= logging_output["oracle_exit"].item() / sample["ntokens"] <= BLOCKS
    loss_plain.backward()
    loss_halted.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in halted.halting.parameters())
    for a, b in zip(plain.decoder.parameters(), halted.decoder.parameters()):  # states were detached
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_train_only_halting_freezes_the_rest():
    model = tiny_model()
    model.halting = HaltingHead("token_multinomial", BLOCKS, 32, 32)
    cfg = OmegaConf.create({"plugins": {"options": {"depth_adaptive": {"train_only_halting": True}}}})
    toolkit_weights_loaded(model, cfg, "finetune")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["halting.classifier.weight", "halting.classifier.bias"]
    with pytest.raises(ValueError, match="needs a halting classifier"):
        toolkit_weights_loaded(tiny_model(), cfg, "init")


def test_halting_policy_follows_the_classifier():
    model = tiny_model().eval()
    with pytest.raises(ValueError, match="needs a model trained with a halting classifier"):
        HaltingExit(HaltingConfig(), model)
    encoder_out = EncoderOutput(torch.randn(3, 4, 32), torch.zeros(3, 4, dtype=torch.bool))
    rows = torch.arange(3)
    step = ExitStep(0, torch.zeros(3, 1, dtype=torch.long), encoder_out, model.decoder.new_state(), rows)
    model.halting = HaltingHead("sequence", BLOCKS, 32, 32)
    with torch.no_grad():
        model.halting.classifier.bias.copy_(torch.tensor([0.0, 0.0, 50.0, 0.0]))  # every sentence: block 3
    policy = HaltingExit(HaltingConfig(), model)
    policy.begin_step(step)
    hidden = torch.randn(3, 32)
    assert [policy.decide(b, hidden, model.decoder, step).tolist() for b in range(3)] == [
        [False] * 3, [False] * 3, [True] * 3]
    # the plan is made once per sentence and follows the beam: a reorder moves it, a new
    # classifier does not change it
    plan = step.state.hypotheses[HaltingExit.PLAN]
    step.state.hypotheses[HaltingExit.PLAN] = torch.tensor([0, 1, 2])
    step.state.reorder(torch.tensor([2, 2, 0]))
    with torch.no_grad():
        model.halting.classifier.bias.zero_()
    policy.begin_step(step)
    assert policy.decide(0, hidden, model.decoder, step).tolist() == [False, False, True]
    step.rows = torch.tensor([0, 1])  # the third row left at block 1
    assert policy.decide(1, hidden[:2], model.decoder, step).tolist() == [False, False]
    assert plan.tolist() == [2, 2, 2]

    model.halting = HaltingHead("token_geometric", BLOCKS, 32, 32)
    with torch.no_grad():
        model.halting.bias.copy_(torch.tensor([-50.0, 50.0, 0.0]))  # chi^1 ~ 0, chi^2 ~ 1
    policy = HaltingExit(HaltingConfig(threshold=0.5), model)
    step.rows = rows
    policy.begin_step(step)
    assert policy.decide(0, hidden, model.decoder, step).tolist() == [False] * 3
    assert policy.decide(1, hidden, model.decoder, step).tolist() == [True] * 3
