"""Quant-Noise in training: the configured fraction of blocks is noised, the stored weights
never change, gradients reach the full-precision weights straight through."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolkit.errors import ConfigError

from quant_noise.int8 import fake_int8
from quant_noise.noise import Codebook, attach_noise, block_draws, block_mask, codebook_state, load_codebook_state, noised
from quant_noise.options import QuantNoiseOptions, check_noise


def test_the_noised_fraction_of_blocks_matches_the_rate():
    weight = torch.randn(64, 32)
    generator = torch.Generator().manual_seed(0)
    fractions = [block_mask(weight, 0.25, 8, generator).float().mean().item() for _ in range(400)]
    assert abs(sum(fractions) / len(fractions) - 0.25) < 0.01
    mask = block_mask(weight, 0.5, 8, generator)
    assert torch.equal(mask.reshape(64, 4, 8).all(-1), mask.reshape(64, 4, 8).any(-1))  # whole blocks


@pytest.mark.parametrize("scheme", ["ipq", "int8"])
def test_noise_values_and_straight_through_gradients(scheme):
    weight = nn.Parameter(torch.randn(16, 24))
    stored = weight.detach().clone()
    out = noised(weight, 0.5, 4, scheme, torch.Generator().manual_seed(1))
    mask = block_mask(stored, 0.5, 4, torch.Generator().manual_seed(1))
    if scheme == "ipq":
        expected = torch.where(mask, torch.zeros_like(stored), stored / 0.5)
    else:
        expected = torch.where(mask, fake_int8(stored), stored)
    torch.testing.assert_close(out, expected)
    upstream = torch.randn(16, 24)
    (out * upstream).sum().backward()
    torch.testing.assert_close(weight.grad, upstream)  # straight through, every weight
    assert torch.equal(weight.detach(), stored)  # never modified in place


@pytest.mark.parametrize("scheme", ["ipq", "int8"])
def test_gradients_through_the_mask_skip_the_noised_blocks(scheme):
    weight = nn.Parameter(torch.randn(16, 24))
    out = noised(weight, 0.5, 4, scheme, torch.Generator().manual_seed(1), straight_through=False)
    mask = block_mask(weight.detach(), 0.5, 4, torch.Generator().manual_seed(1))
    upstream = torch.randn(16, 24)
    (out * upstream).sum().backward()
    kept = upstream / 0.5 if scheme == "ipq" else upstream
    torch.testing.assert_close(weight.grad, torch.where(mask, torch.zeros_like(upstream), kept))


def test_attached_noise_changes_training_forwards_only_and_keeps_keys():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 16), nn.Linear(16, 16))
    keys, stored = list(model.state_dict()), {k: v.clone() for k, v in model.state_dict().items()}
    changed = attach_noise(model, {nn.Linear: (0.5, 4), nn.Embedding: (0.5, 4)}, "int8")
    assert changed == ["0", "1"] and list(model.state_dict()) == keys
    tokens = torch.tensor([[1, 2, 3]])
    plain = nn.functional.linear(model[0].weight[tokens], model[1].weight, model[1].bias)
    model.train()
    assert not torch.allclose(model(tokens), plain)
    model.eval()
    torch.testing.assert_close(model(tokens), plain)
    for key, value in model.state_dict().items():
        assert torch.equal(value, stored[key])


def test_a_block_size_that_does_not_divide_the_width_is_refused():
    with pytest.raises(ConfigError, match="block size 5 does not divide the width 16 of 1"):
        attach_noise(nn.Sequential(nn.Embedding(10, 16), nn.Linear(16, 16)), {nn.Linear: (0.1, 5),
                     nn.Embedding: (0.0, 8)}, "ipq")


def test_a_module_pattern_chooses_the_noised_modules_and_must_match_one():
    model = nn.ModuleDict({"embed": nn.Embedding(10, 16),
                           "layers": nn.ModuleList([nn.Linear(16, 16), nn.Linear(16, 16)]), "out": nn.Linear(16, 10)})
    rates = {nn.Linear: (0.1, 4), nn.Embedding: (0.1, 4)}
    assert attach_noise(model, rates, "ipq", modules=r"layers\.") == ["layers.0", "layers.1"]
    assert not hasattr(model["out"], "noise") and not hasattr(model["embed"], "noise")
    with pytest.raises(ConfigError, match="matches no Linear or Embedding"):
        attach_noise(model, rates, "ipq", modules=r"^decoder\.")
    with pytest.raises(ConfigError, match="modules is not a regular expression"):
        check_noise(QuantNoiseOptions(modules="layers.("))


def test_a_checkpoint_written_before_an_option_existed_rebuilds_with_its_default(trained_run):
    """The stored config names only the options of its day; the rest take today's defaults."""
    from omegaconf import OmegaConf

    from toolkit.checkpoint import load_checkpoint
    from toolkit.inference import rebuild_model
    from toolkit.plugins import get_plugins

    state = load_checkpoint(trained_run / "checkpoint_last.pt")
    options = state["cfg"].setdefault("plugins", {}).setdefault("options", {})
    options["quant_noise"] = {"scheme": "ipq", "linear_rate": 0.1}  # no straight_through, no modules
    _, model = rebuild_model(OmegaConf.create(state["cfg"]), state, get_plugins())
    noised_modules = [m for m in model.modules() if hasattr(m, "noise")]
    assert noised_modules and all(m.noise == (0.1, 8, "ipq", True) for m in noised_modules)


def _clustered_weight(rows: int = 32, cols: int = 16, block: int = 4, clusters: int = 4) -> torch.Tensor:
    """(rows, cols) whose blocks lie near ``clusters`` far-apart centres."""
    generator = torch.Generator().manual_seed(3)
    centres = torch.randn(clusters, block, generator=generator) * 10
    picks = torch.randint(clusters, (rows * cols // block,), generator=generator)
    return (centres[picks] + 0.01 * torch.randn(picks.numel(), block, generator=generator)).reshape(rows, cols)


def test_centroid_noise_gives_chosen_blocks_their_nearest_centroid_straight_through():
    weight = nn.Parameter(_clustered_weight())
    stored = weight.detach().clone()
    codebook = Codebook(centroids=4, block_size=4, interval=100)
    out = noised(weight, 0.5, 4, "centroid", torch.Generator().manual_seed(1), codebook=codebook)
    draws = block_draws(stored, 0.5, 4, torch.Generator().manual_seed(1))  # (32, 4)
    blocks, got = stored.reshape(32, 4, 4), out.detach().reshape(32, 4, 4)
    assert 0 < int(draws.sum()) < draws.numel()
    torch.testing.assert_close(got[~draws], blocks[~draws])  # the others untouched
    centroids = codebook.centroids
    for block, value in zip(blocks[draws], got[draws]):
        distances = (centroids - block).pow(2).sum(1)
        torch.testing.assert_close(value, centroids[distances.argmin()])
        assert (value - block).abs().max() < 0.1  # the clusters are found: a small error
    upstream = torch.randn(32, 16)
    (out * upstream).sum().backward()
    torch.testing.assert_close(weight.grad, upstream)
    assert torch.equal(weight.detach(), stored)


def test_the_codebook_is_refreshed_every_interval_uses_and_follows_the_weight():
    weight = _clustered_weight()
    codebook = Codebook(centroids=4, block_size=4, interval=3)
    for _ in range(7):
        codebook.current(weight)
    assert codebook.refreshes == 3  # uses 0, 3 and 6
    before = codebook.centroids.clone()
    moved = weight + 0.5
    for _ in range(2):
        assert torch.equal(codebook.current(moved), before)  # uses 7, 8: not due yet
    codebook.current(moved)  # use 9: refreshed, warm-started from the old codebook
    assert codebook.refreshes == 4
    torch.testing.assert_close(codebook.centroids, before + 0.5, atol=0.02, rtol=0)  # same order: warm start


def test_tied_weights_share_one_codebook_and_bad_codebooks_are_refused():
    embedding = nn.Embedding(16, 8)
    output = nn.Linear(8, 16, bias=False)
    output.weight = embedding.weight
    model = nn.ModuleDict({"embed": embedding, "out": output, "hidden": nn.Linear(8, 8)})
    attach_noise(model, {nn.Linear: (0.2, 4), nn.Embedding: (0.2, 4)}, "centroid", centroids=4)
    assert model["embed"].codebook is model["out"].codebook
    assert model["hidden"].codebook is not model["out"].codebook
    with pytest.raises(ConfigError, match="64 centroids for the 16 blocks of hidden"):
        attach_noise(nn.ModuleDict({"hidden": nn.Linear(8, 8)}), {nn.Linear: (0.2, 4), nn.Embedding: (0, 8)},
                     "centroid", centroids=64)
    with pytest.raises(ConfigError, match="codebook_interval must be >= 1, got 0"):
        check_noise(QuantNoiseOptions(scheme="centroid", codebook_interval=0))


def test_codebook_state_round_trips_and_a_foreign_one_is_refused():
    model = nn.ModuleDict({"embed": nn.Embedding(16, 8), "hidden": nn.Linear(8, 8)})
    attach_noise(model, {nn.Linear: (0.2, 4), nn.Embedding: (0.2, 4)}, "centroid", centroids=4)
    model["hidden"].codebook.current(model["hidden"].weight)
    state = codebook_state(model)
    assert set(state) == {"embed", "hidden"} and "centroids" not in state["embed"] and state["hidden"]["uses"] == 1
    fresh = nn.ModuleDict({"embed": nn.Embedding(16, 8), "hidden": nn.Linear(8, 8)})
    attach_noise(fresh, {nn.Linear: (0.2, 4), nn.Embedding: (0.2, 4)}, "centroid", centroids=4)
    load_codebook_state(fresh, state)
    assert torch.equal(fresh["hidden"].codebook.centroids, state["hidden"]["centroids"])
    with pytest.raises(ConfigError, match=r"codebooks for \['other'\], which this run does not noise"):
        load_codebook_state(fresh, {"other": state["hidden"]})
    with pytest.raises(ValueError, match=r"saved codebook of shape \(4, 8\), expected \(4, 4\)"):
        fresh["hidden"].codebook.load_state_dict({**state["hidden"], "centroids": torch.zeros(4, 8)})


CENTROID_RUN = ["task.toy_pairs=300", "task.vocab_size=120", "task.splits=[train,valid]", "model.encoder_layers=1",
                "model.decoder_layers=1", "model.encoder_embed_dim=32", "model.decoder_embed_dim=32",
                "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64", "dataset.max_tokens=512",
                "dataset.max_positions=64", "common.threads=1", "common.log_format=none", "common.tensorboard_dir=null",
                "+plugins.options.quant_noise.scheme=centroid", "+plugins.options.quant_noise.linear_rate=0.5",
                "+plugins.options.quant_noise.embedding_rate=0.5", "+plugins.options.quant_noise.centroids=16",
                "+plugins.options.quant_noise.codebook_interval=7"]


def test_a_resumed_centroid_noise_run_continues_the_same_curve_bitwise(tmp_path):
    """The codebooks travel in the checkpoint: a run stopped after one epoch and resumed noises
    with the codebooks it had (not a fresh k-means), so it ends on the same weights."""
    from toolkit.checkpoint import load_checkpoint
    from toolkit.config import compose_train_config
    from toolkit.training.train import train

    def run(save_dir, epochs):
        return train(compose_train_config([*CENTROID_RUN, f"checkpoint.save_dir={save_dir}",
                                           f"optimization.max_epoch={epochs}"]))

    straight = run(tmp_path / "straight", 2)
    first = run(tmp_path / "resumed", 1)
    saved = load_checkpoint(tmp_path / "resumed" / "checkpoint_last.pt")["plugin_state"]["quant_noise"]["codebooks"]
    assert saved and all(entry["centroids"].shape[0] == 16 for entry in saved.values())
    assert all(entry["uses"] % 7 for entry in saved.values())  # stopped mid-interval: a fresh k-means would differ
    second = run(tmp_path / "resumed", 2)
    assert first["train_losses"] + second["train_losses"] == straight["train_losses"]
    a = load_checkpoint(tmp_path / "straight" / "checkpoint_last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint_last.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
