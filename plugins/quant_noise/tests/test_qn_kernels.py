"""k-means, product quantization and int8 layers on known cases."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.checkpoint import CheckpointError
from toolkit.devices import PlacementError, check_placement
from toolkit.errors import ConfigError

from quant_noise.int8 import Int8Linear
from quant_noise.ipq import PQLinear, check_pq
from quant_noise.kmeans import kmeans


def test_kmeans_recovers_known_clusters():
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = centers.repeat_interleave(50, 0) + 0.1 * torch.randn(200, 2, generator=generator)
    found, assignments = kmeans(points, 4, seed=3)
    order = torch.cdist(centers, found).argmin(1)
    torch.testing.assert_close(found[order], centers, atol=0.05, rtol=0)
    for cluster in range(4):  # each true cluster lands in one found cluster, whole
        assert assignments[cluster * 50 : (cluster + 1) * 50].unique().numel() == 1


def test_kmeans_handles_an_empty_cluster_and_too_many_centroids():
    points = torch.tensor([[0.0], [0.0], [0.0], [5.0], [5.0], [9.0]])  # 3 distinct values
    found, assignments = kmeans(points, 4, iterations=5)
    assert torch.isfinite(found).all()
    torch.testing.assert_close(found[assignments], points)  # every point sits on a centroid
    with pytest.raises(ValueError, match="7 centroids for 6 sub-vectors"):
        kmeans(points, 7)


def test_pq_weights_are_centroids_of_codes_and_bad_shapes_are_refused():
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    pq = PQLinear.from_float(linear, block_size=4, centroids=8)
    assert pq.pq.codes.dtype == torch.uint8 and pq.pq.centroids.dtype == torch.float16
    rebuilt = pq.pq.centroids.float()[pq.pq.codes.long()].reshape(8, 16)
    assert torch.equal(pq.pq.weight, rebuilt)
    x = torch.randn(3, 16)
    torch.testing.assert_close(pq(x), x @ rebuilt.T + linear.bias.detach())
    with pytest.raises(ConfigError, match="block size 3 does not divide the width 16 of w"):
        check_pq("w", (8, 16), 3, 8)
    with pytest.raises(ConfigError, match="64 centroids for the 32 sub-vectors of w"):
        check_pq("w", (8, 16), 4, 64)


def test_more_than_256_centroids_store_uint16_codes_and_corrupt_codes_are_refused():
    torch.manual_seed(0)
    linear = nn.Linear(64, 64)
    pq = PQLinear.from_float(linear, block_size=4, centroids=300)  # 1,024 sub-vectors
    assert pq.pq.codes.dtype == torch.uint16 and int(pq.pq.codes.long().max()) >= 256
    buffer = io.BytesIO()
    torch.save(pq.state_dict(), buffer)
    buffer.seek(0)
    restored = PQLinear(64, 64, True, block_size=4, centroids=300)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.pq.weight, pq.pq.weight)
    corrupt = {**pq.state_dict(), "pq.codes": pq.pq.codes.long().add(300).to(torch.uint16)}  # past the centroids
    with pytest.raises(CheckpointError, match="codes from 300 to .* for 300 centroids"):
        PQLinear(64, 64, True, block_size=4, centroids=300).load_state_dict(corrupt)


def test_an_int8_linear_layer_is_close_to_float_and_runs_only_on_cpu_in_fp32():
    torch.manual_seed(0)
    linear = nn.Linear(256, 512)
    int8 = Int8Linear.from_float(linear).eval()
    x = torch.randn(20, 256)
    reference = linear(x)
    error = (int8(x) - reference).norm() / reference.norm()
    assert error < 0.02  # integer GEMM with activations quantized per batch
    restored = Int8Linear(256, 512, True).eval()
    restored.load_state_dict(int8.state_dict())
    torch.testing.assert_close(restored(x), int8(x))
    with pytest.raises(PlacementError, match="runs only on cpu, not cuda"):
        check_placement(nn.Sequential(int8), torch.device("cuda"), torch.float32)
    with pytest.raises(PlacementError, match="runs only in float32, not float16"):
        check_placement(nn.Sequential(int8), torch.device("cpu"), torch.float16)


def test_gradients_pass_through_a_frozen_int8_layer_in_training():
    """Iterative fine-tuning trains the layers below an int8 one: in training mode it computes
    with its dequantized weight (the integer kernel has no backward), its int8 values stay."""
    torch.manual_seed(0)
    below, int8 = nn.Linear(16, 32), Int8Linear.from_float(nn.Linear(32, 8)).train()
    stored = int8.weight_int8.clone()
    x = torch.randn(4, 16)
    int8(below(x)).square().sum().backward()
    expected = torch.autograd.grad(F.linear(below(x), int8.dequantized(), int8.bias).square().sum(), below.weight)[0]
    torch.testing.assert_close(below.weight.grad, expected)
    assert below.weight.grad.abs().sum() > 0 and torch.equal(int8.weight_int8, stored)
