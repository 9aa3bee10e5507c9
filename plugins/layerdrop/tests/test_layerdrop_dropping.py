"""Block dropping: the rate holds over many updates, dropped blocks are not computed, eval
mode runs every block, and the state-dict keys stay those of the plain model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import OmegaConf

from toolkit.data.dictionary import Dictionary
from toolkit.errors import ConfigError
from toolkit.models.architectures import transformer_tiny
from toolkit.models.transformer import TransformerModel

from layerdrop.dropping import BlockDropper
from layerdrop.options import LayerDropOptions
from layerdrop.plugin import check_subnet_depths, toolkit_modify_model

VOCAB = Dictionary(["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(30)])


def tiny_model(blocks: int = 6) -> TransformerModel:
    torch.manual_seed(0)
    cfg = dataclasses.replace(transformer_tiny(), dropout=0.0, encoder_layers=blocks, decoder_layers=blocks,
                              encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_dim=32, decoder_ffn_dim=32,
                              encoder_attention_heads=2, decoder_attention_heads=2)
    return TransformerModel.from_config(cfg, VOCAB, VOCAB)


def run_cfg(encoder_rate: float, decoder_rate: float, **options):
    options = LayerDropOptions(encoder_rate=encoder_rate, decoder_rate=decoder_rate, **options)
    return OmegaConf.create({"common": {"seed": 3}, "plugins": {"options": {"layerdrop": dataclasses.asdict(options)}}})


def blocks_run_per_update(model: TransformerModel, updates: int) -> list[int]:
    """How many encoder and decoder blocks ran a forward in each of ``updates`` training forwards."""
    calls = [0]
    for side in ("encoder", "decoder"):
        for layer in getattr(model, side).layers:
            layer.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    model.train()
    ran = []
    for update in range(updates):
        model.encoder.skip_blocks.update = model.decoder.skip_blocks.update = update
        before = calls[0]
        model(*batch())
        ran.append(calls[0] - before)
    return ran


def batch():
    generator = torch.Generator().manual_seed(1)
    src = torch.randint(4, len(VOCAB), (3, 7), generator=generator)
    prev = torch.randint(4, len(VOCAB), (3, 5), generator=generator)
    return src, torch.full((3,), 7), prev


def test_skipped_fraction_matches_the_rate_and_is_the_same_for_every_rank():
    droppers = [BlockDropper(6, 0.2, seed=1, side=0) for _ in range(2)]  # two ranks
    skipped = 0
    for update in range(2000):
        choices = []
        for dropper in droppers:
            dropper.update = update
            choices.append(dropper())
        assert choices[0] == choices[1]
        skipped += len(choices[0])
    assert abs(skipped / (2000 * 6) - 0.2) < 0.015  # 4 standard deviations
    encoder, decoder = BlockDropper(6, 0.2, seed=1, side=0), BlockDropper(6, 0.2, seed=1, side=1)
    differ = 0
    for update in range(50):  # the two sides draw independently
        encoder.update = decoder.update = update
        differ += encoder() != decoder()
    assert differ > 10


def test_dropped_blocks_run_no_forward_and_eval_mode_runs_them_all():
    model = tiny_model()
    toolkit_modify_model(model, run_cfg(0.5, 0.5))
    assert model.find_unused_parameters
    calls = {}
    for side in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, side).layers):
            calls[side, i] = 0
            layer.register_forward_hook(lambda *_, key=(side, i): calls.__setitem__(key, calls[key] + 1))
    expected = dict.fromkeys(calls, 0)
    model.train()
    for update in range(40):
        for side in ("encoder", "decoder"):
            dropper = getattr(model, side).skip_blocks
            dropper.update = update
            for i in set(range(6)) - dropper():
                expected[side, i] += 1
        model(*batch())
    assert calls == expected and 0 < sum(calls.values()) < 40 * 12
    model.eval()
    before = dict(calls)
    model(*batch())
    assert all(calls[key] == before[key] + 1 for key in calls)


def test_a_skipping_forward_equals_the_model_without_those_blocks():
    model = tiny_model()
    toolkit_modify_model(model, run_cfg(0.5, 0.5))
    model.train()  # no dropout in this model: training mode differs only by the skipped blocks
    model.encoder.skip_blocks.update = model.decoder.skip_blocks.update = 7
    dropped = {side: getattr(model, side).skip_blocks() for side in ("encoder", "decoder")}
    assert dropped["encoder"] and dropped["decoder"]
    skipping = model(*batch()).logits
    plain = tiny_model()
    for side in ("encoder", "decoder"):
        stack = getattr(plain, side)
        stack.layers = torch.nn.ModuleList([b for i, b in enumerate(stack.layers) if i not in dropped[side]])
    torch.testing.assert_close(skipping, plain.eval()(*batch()).logits)
    assert list(model.state_dict()) == list(tiny_model().state_dict())


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_a_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(ConfigError, match=f"decoder_rate must be in \\[0, 1\\), got {rate}"):
        toolkit_modify_model(tiny_model(), run_cfg(0.0, rate))


def test_late_layerdrop_computes_every_block_before_its_start_update():
    model = tiny_model()
    toolkit_modify_model(model, run_cfg(0.5, 0.5, start_update=10))
    ran = blocks_run_per_update(model, 20)
    assert ran[:10] == [12] * 10  # updates 0-9: all 6 + 6 blocks
    assert sum(ran[10:]) < 10 * 12 * 0.75  # from update 10 on, about half are skipped


def test_a_negative_start_update_is_refused():
    with pytest.raises(ConfigError, match="start_update must be >= 0, got -5"):
        toolkit_modify_model(tiny_model(), run_cfg(0.2, 0.2, start_update=-5))


def test_subnet_updates_train_the_every_other_blocks_on_both_sides_at_once():
    encoder = BlockDropper(6, 0.0, seed=1, side=0, subnet_rate=0.5, subnet_depths=[3])
    decoder = BlockDropper(6, 0.0, seed=1, side=1, subnet_rate=0.5, subnet_depths=[3])
    subnet = 0
    for update in range(1000):
        encoder.update = decoder.update = update
        skipped = encoder()
        assert skipped == decoder()  # the same sub-network on both sides
        assert skipped in (frozenset(), frozenset({1, 3, 5}))  # toolkit-prune --keep spread:3 keeps 0, 2, 4
        subnet += bool(skipped)
    assert abs(subnet / 1000 - 0.5) < 0.064  # 4 standard deviations


def test_subnet_depths_are_drawn_evenly_and_the_other_updates_use_the_rate():
    dropper = BlockDropper(6, 0.2, seed=1, side=0, subnet_rate=0.6, subnet_depths=[2, 3, 4])
    seen = {frozenset({1, 2, 4, 5}): 0, frozenset({1, 3, 5}): 0, frozenset({2, 5}): 0}  # keep 0,3 / 0,2,4 / 0,1,3,4
    others = 0
    for update in range(3000):
        dropper.update = update
        skipped = dropper()
        if skipped in seen:
            seen[skipped] += 1
        else:
            others += len(skipped)
    assert all(abs(count / 3000 - 0.2) < 0.03 for count in seen.values())  # 0.6 / 3 each
    assert 0.15 < others / (6 * (3000 - sum(seen.values()))) < 0.25  # the rest: each block at rate 0.2


def test_a_subnet_update_runs_half_the_blocks():
    model = tiny_model()
    toolkit_modify_model(model, run_cfg(0.0, 0.0, subnet_rate=0.5, subnet_depths=[3]))
    ran = blocks_run_per_update(model, 30)
    assert set(ran) == {6, 12}  # 3 + 3 blocks or all 6 + 6
    assert 7.5 < sum(ran) / 30 < 10.5  # about half the updates each


@pytest.mark.parametrize(("options", "message"), [
    ({"subnet_rate": 1.5, "subnet_depths": [3]}, "subnet_rate must be in \\[0, 1\\], got 1.5"),
    ({"subnet_rate": 0.5}, "subnet_rate > 0 needs subnet_depths"),
])
def test_bad_subnet_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        toolkit_modify_model(tiny_model(), run_cfg(0.0, 0.0, **options))


def test_a_subnet_depth_beyond_the_model_is_refused_in_training_but_a_pruned_model_loads():
    options = run_cfg(0.0, 0.0, subnet_rate=0.5, subnet_depths=[3]).plugins.options.layerdrop
    with pytest.raises(ConfigError, match="subnet_depths: 3 is not a depth of the encoder's 2 blocks"):
        check_subnet_depths(tiny_model(blocks=2), options)
    check_subnet_depths(tiny_model(blocks=6), options)
    pruned = tiny_model(blocks=2)  # what toolkit-prune rebuilds from a 6+6 file trained with subnet_depths=[3]
    toolkit_modify_model(pruned, run_cfg(0.0, 0.0, subnet_rate=0.5, subnet_depths=[3]))
    pruned.eval()
    assert pruned(*batch()).logits.shape[:2] == (3, 5)  # it runs: eval mode skips nothing
