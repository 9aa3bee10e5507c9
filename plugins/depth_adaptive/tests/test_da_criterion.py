"""The depth_adaptive criterion: aligned and mixed losses, copying, per-block classifiers."""

from __future__ import annotations

import copy
import types

import pytest
import torch
from omegaconf import OmegaConf

from depth_adaptive.criterion import DepthAdaptiveCriterion, DepthAdaptiveCriterionConfig, copied_above_exits
from depth_adaptive.heads import attach_exit_heads
from depth_adaptive.options import DepthAdaptiveOptions
from toolkit.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

from da_testing import BLOCKS, VOCAB, tiny_batch, tiny_model


def reference_loss(logits: torch.Tensor, sample: dict, epsilon: float = 0.1) -> torch.Tensor:
    lprobs = torch.log_softmax(logits.double(), dim=-1).view(-1, logits.size(-1))
    return label_smoothed_nll_loss(lprobs, sample["target"].view(-1), epsilon, VOCAB.pad)[0]


def test_aligned_loss_is_the_weighted_mean_of_every_blocks_loss():
    model, sample = tiny_model(), tiny_batch()
    weights = [1.0, 2.0, 0.5, 3.0]
    criterion = DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(block_weights=weights), VOCAB.pad)
    loss, sample_size, logging_output = criterion(model, sample)
    expected = 0.0
    for n in range(1, BLOCKS + 1):  # block n's loss: the model cut to n blocks reads out exactly that state
        truncated = copy.deepcopy(model)
        del truncated.decoder.layers[n:]
        block_loss = reference_loss(truncated(**sample["net_input"]).logits, sample)
        expected += weights[n - 1] * block_loss
        nll = reference_nll(truncated(**sample["net_input"]).logits, sample)
        assert logging_output[f"nll_block{n}"].item() == pytest.approx(nll, rel=1e-4)
    assert loss.item() == pytest.approx(expected.item() / sum(weights), rel=1e-5)
    assert sample_size == sample["ntokens"]
    metrics = DepthAdaptiveCriterion.reduce_metrics({k: float(v) for k, v in logging_output.items()})
    assert metrics["nll_block1"] == pytest.approx(logging_output["nll_block1"].item() / sample["ntokens"])


def reference_nll(logits: torch.Tensor, sample: dict) -> float:
    lprobs = torch.log_softmax(logits.double(), dim=-1).view(-1, logits.size(-1))
    return label_smoothed_nll_loss(lprobs, sample["target"].view(-1), 0.0, VOCAB.pad)[1].item()


@pytest.mark.parametrize("block", [1, 2, BLOCKS])
def test_mixed_with_every_token_exiting_at_block_n_is_the_depth_n_model(block):
    model, sample = tiny_model(), tiny_batch()
    criterion = DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(mode="mixed", samples=2), VOCAB.pad).train()
    exits = torch.full((2 * sample["target"].size(0), sample["target"].size(1)), block)
    loss, _, _ = criterion.mixed(model, sample, exits=exits)
    truncated = copy.deepcopy(model)
    del truncated.decoder.layers[block:]
    assert loss.item() == pytest.approx(reference_loss(truncated(**sample["net_input"]).logits, sample).item(),
                                        rel=1e-5)


def reference_kl(top: torch.Tensor, logits: torch.Tensor, sample: dict) -> torch.Tensor:
    """KL(softmax(top) || softmax(logits)) summed over the target's non-padding tokens."""
    keep = sample["target"].ne(VOCAB.pad)
    teacher, student = torch.log_softmax(top.double(), -1), torch.log_softmax(logits.double(), -1)
    return (teacher.exp() * (teacher - student)).sum(-1)[keep].sum()


def truncated_logits(model, sample: dict, blocks: int) -> torch.Tensor:
    truncated = copy.deepcopy(model)
    del truncated.decoder.layers[blocks:]
    return truncated(**sample["net_input"]).logits


def test_self_distillation_mixes_each_low_exits_loss_with_its_kl_to_the_last_block():
    beta, model, sample = 0.25, tiny_model(), tiny_batch()
    criterion = DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(exit_distill_weight=beta), VOCAB.pad)
    loss, _, logging_output = criterion(model, sample)
    top, expected, kls = model(**sample["net_input"]).logits, 0.0, 0.0
    for n in range(1, BLOCKS + 1):
        logits = truncated_logits(model, sample, n)
        block_loss = reference_loss(logits, sample)
        if n < BLOCKS:
            kls += reference_kl(top, logits, sample)
            block_loss = (1 - beta) * block_loss + beta * reference_kl(top, logits, sample)
        expected += block_loss
    assert loss.item() == pytest.approx(expected.item() / BLOCKS, rel=1e-5)
    assert logging_output["exit_distill"].item() == pytest.approx(kls.item() / (BLOCKS - 1), rel=1e-4)


def test_the_last_block_teaches_without_learning_from_its_students():
    model, sample = tiny_model(), tiny_batch()
    only_block1 = DepthAdaptiveCriterionConfig(exit_distill_weight=1.0, block_weights=[1.0] + [0.0] * (BLOCKS - 1))
    DepthAdaptiveCriterion(only_block1, VOCAB.pad)(model, sample)[0].backward()  # KL(top || block 1) alone
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.layers[0].parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.decoder.layers[1:].parameters())


def test_distilling_block_1_alone_brings_it_to_the_last_blocks_distribution():
    model, sample = tiny_model(seed=2), tiny_batch(rows=8, seed=4)
    config = DepthAdaptiveCriterionConfig(exit_distill_weight=1.0, block_weights=[1.0] + [0.0] * (BLOCKS - 1))
    criterion = DepthAdaptiveCriterion(config, VOCAB.pad)

    def block1_kl() -> float:
        with torch.no_grad():
            return reference_kl(model(**sample["net_input"]).logits, truncated_logits(model, sample, 1), sample).item()

    before, optimizer = block1_kl(), torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        optimizer.zero_grad()
        criterion(model, sample)[0].backward()
        optimizer.step()
    assert block1_kl() < 0.2 * before


@pytest.mark.parametrize("mode", ["aligned", "mixed"])
def test_the_train_step_hook_switches_self_distillation_on_at_its_start_update(mode, session):
    model, sample = tiny_model(), tiny_batch()
    criterion = DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(mode=mode, exit_distill_weight=0.5,
                                                                    exit_distill_start=3), VOCAB.pad).train()
    plain = DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(mode=mode), VOCAB.pad).train()
    for update, distilled in ((2, False), (3, True)):
        trainer = types.SimpleNamespace(num_updates=update)  # what the hook reads of the trainer
        torch.manual_seed(0)
        loss, _, logging_output = session.hook.toolkit_train_step(model=model, criterion=criterion, sample=sample,
                                                                  trainer=trainer, validating=False)
        torch.manual_seed(0)
        plain_loss = plain(model, sample)[0]
        assert ("exit_distill" in logging_output) == distilled
        assert (loss.item() == pytest.approx(plain_loss.item(), rel=1e-6)) == (not distilled)


@pytest.mark.parametrize("block", [1, 2, BLOCKS])
def test_mixed_self_distillation_teaches_the_tokens_below_the_last_block(block):
    beta, model, sample = 0.5, tiny_model(), tiny_batch()
    config = DepthAdaptiveCriterionConfig(mode="mixed", samples=2, exit_distill_weight=beta)
    criterion = DepthAdaptiveCriterion(config, VOCAB.pad).train()
    exits = torch.full((2 * sample["target"].size(0), sample["target"].size(1)), block)
    loss, _, logging_output = criterion.mixed(model, sample, exits=exits)
    logits = truncated_logits(model, sample, block)
    expected = reference_loss(logits, sample)
    if block < BLOCKS:
        kl = reference_kl(model(**sample["net_input"]).logits, logits, sample)
        expected = (1 - beta) * expected + beta * kl
        assert logging_output["exit_distill"].item() == pytest.approx(kl.item(), rel=1e-4)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert logging_output["nll_loss"].item() == pytest.approx(reference_nll(logits, sample), rel=1e-4)


def test_mixed_self_distillation_keeps_the_nll_of_random_exits():
    model, sample = tiny_model(), tiny_batch()
    exits = torch.randint(1, BLOCKS + 1, (3 * 3, 6), generator=torch.Generator().manual_seed(5))
    plain, distilled = (DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(mode="mixed", exit_distill_weight=beta),
                                               VOCAB.pad).train() for beta in (0.0, 0.5))
    _, _, plain_log = plain.mixed(model, sample, exits=exits)
    loss, _, distilled_log = distilled.mixed(model, sample, exits=exits)
    assert distilled_log["nll_loss"].item() == pytest.approx(plain_log["nll_loss"].item(), rel=1e-5)
    assert loss.item() != pytest.approx(plain_log["loss"].item(), rel=1e-3)
    assert distilled_log["exit_distill"].item() > 0


def test_copying_returns_the_exit_state_above_the_exit_and_gradients_flow():
    model, sample = tiny_model(), tiny_batch()
    target = sample["target"]
    exits = torch.randint(1, BLOCKS + 1, target.shape, generator=torch.Generator().manual_seed(3))
    with copied_above_exits(model.decoder, exits):
        hidden = model(**sample["net_input"], return_all_hiddens=True).hidden_states
    for k in range(1, BLOCKS):  # block k+1 (1-based) copies the tokens that exited at or below k
        copied = exits <= k
        assert torch.equal(hidden[k][copied], hidden[k - 1][copied])
        assert not torch.allclose(hidden[k][~copied], hidden[k - 1][~copied])
    later = model(**sample["net_input"], return_all_hiddens=True).hidden_states  # hooks are gone
    assert not torch.equal(later[-1][exits == 1], later[0][exits == 1])

    criterion = DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(mode="mixed", samples=3), VOCAB.pad).train()
    torch.manual_seed(0)
    loss, _, _ = criterion(model, sample)
    loss.backward()
    assert all(p.grad is not None for p in model.decoder.layers.parameters())


def test_eval_mode_reports_the_aligned_loss():
    model, sample = tiny_model().eval(), tiny_batch()
    mixed = DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(mode="mixed"), VOCAB.pad).eval()
    aligned = DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(), VOCAB.pad)
    with torch.no_grad():
        assert mixed(model, sample)[0].item() == pytest.approx(aligned(model, sample)[0].item())


@pytest.mark.parametrize("classifiers, block_norms, new_parameters", [
    ("shared", False, 0), ("shared", True, 2 * 32 * (BLOCKS - 1)),
    ("separate", False, len(VOCAB) * 32 * (BLOCKS - 1)),
    ("separate", True, (len(VOCAB) * 32 + 2 * 32) * (BLOCKS - 1))])
def test_per_block_classifiers(classifiers, block_norms, new_parameters):
    model = tiny_model()
    before = model.num_parameters()
    attach_exit_heads(model.decoder, OmegaConf.structured(DepthAdaptiveOptions(classifiers, block_norms)))
    assert model.num_parameters() - before == new_parameters
    hidden = torch.randn(5, 32)
    if block_norms:  # a fresh norm equals the final one: let it have learnt something
        with torch.no_grad():
            model.decoder.exit_heads[0].norm.weight.mul_(2.0)
    if new_parameters:
        assert torch.equal(model.decoder.project(hidden, 0), model.decoder.exit_heads[0](hidden))
        assert not torch.allclose(model.decoder.project(hidden, 0), model.decoder.project(hidden))
    assert torch.equal(model.decoder.project(hidden, BLOCKS - 1), model.decoder.project(hidden))  # last: its own


def test_the_aligned_loss_trains_separate_classifiers():
    model, sample = tiny_model(), tiny_batch()
    attach_exit_heads(model.decoder, OmegaConf.structured(DepthAdaptiveOptions("separate")))
    criterion = DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(), VOCAB.pad)
    criterion(model, sample)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.exit_heads.parameters())


@pytest.mark.parametrize("settings, message", [
    ({"mode": "mixd"}, "mode must be one of"), ({"samples": 0}, "samples must be >= 1"),
    ({"block_weights": [1.0, -1.0]}, "block_weights must be >= 0"),
    ({"exit_distill_weight": 1.5}, "exit_distill_weight must be in"),
    ({"exit_distill_start": -1}, "exit_distill_start must be >= 0")])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(**settings), VOCAB.pad)


def test_weights_of_the_wrong_length_are_named():
    criterion = DepthAdaptiveCriterion(DepthAdaptiveCriterionConfig(block_weights=[1.0, 1.0]), VOCAB.pad)
    with pytest.raises(ValueError, match="2 weights for a 4-block decoder"):
        criterion(tiny_model(), tiny_batch())
