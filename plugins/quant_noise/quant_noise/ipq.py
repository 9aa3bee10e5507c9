"""Product-quantized weights: each row cut into sub-vectors of ``block_size`` weights, each
sub-vector stored as the index of its centroid (uint8, or uint16 above 256 centroids) with
fp16 centroids. The float weight is rebuilt once after loading, never at every forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.checkpoint import CheckpointError
from toolkit.errors import ConfigError

from quant_noise.kmeans import kmeans


def code_dtype(centroids: int) -> torch.dtype:
    return torch.uint8 if centroids <= 256 else torch.uint16


def check_pq(name: str, weight_shape: tuple[int, int], block_size: int, centroids: int) -> None:
    """Refuse, before any work, a block size that does not divide the row or too many centroids."""
    rows, cols = weight_shape
    if cols % block_size:
        raise ConfigError(f"iPQ block size {block_size} does not divide the width {cols} of {name}")
    if centroids > rows * cols // block_size:
        raise ConfigError(f"iPQ: {centroids} centroids for the {rows * cols // block_size} sub-vectors of {name}")
    if centroids > 2**16:
        raise ConfigError(f"iPQ: at most {2**16} centroids, got {centroids}")


def product_quantize(weight: torch.Tensor, block_size: int, centroids: int, iterations: int = 20,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) -> codes (rows, cols / block_size) and centroids (K, block_size)."""
    rows, cols = weight.shape
    points = weight.detach().float().reshape(rows * cols // block_size, block_size)  # (N, b)
    found, assignments = kmeans(points, centroids, iterations, seed)
    return assignments.reshape(rows, cols // block_size).to(code_dtype(centroids)), found


class PQWeight(nn.Module):
    """Codes, centroids and the float weight rebuilt from them (``centroids[codes]``)."""

    def __init__(self, rows: int, cols: int, block_size: int, centroids: int):
        super().__init__()
        self.rows, self.cols, self.block_size = rows, cols, block_size
        self.register_buffer("codes", torch.zeros(rows, cols // block_size, dtype=code_dtype(centroids)))
        self.register_buffer("centroids", torch.zeros(centroids, block_size, dtype=torch.float16))
        self.register_buffer("weight", torch.zeros(rows, cols), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _: module.rebuild())

    def set(self, codes: torch.Tensor, centroids: torch.Tensor) -> None:
        self.codes, self.centroids = codes, centroids.to(torch.float16)
        self.rebuild()

    def rebuild(self) -> None:
        """weight = centroids[codes], once (after loading or quantizing); codes that point past
        the centroids (a corrupt file) are refused."""
        codes = self.codes.long()
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.centroids.size(0)):
            raise CheckpointError(f"iPQ weight ({self.rows} x {self.cols}): codes from {int(codes.min())} to "
                                  f"{int(codes.max())} for {self.centroids.size(0)} centroids")
        with torch.no_grad():
            self.weight = self._from_centroids().detach()

    def _from_centroids(self) -> torch.Tensor:
        return self.centroids.float()[self.codes.long()].reshape(self.rows, self.cols)  # (rows, cols)

    def current(self) -> torch.Tensor:
        """The weight to compute with: rebuilt at every forward while the centroids train."""
        return self._from_centroids() if self.trainable else self.weight

    @property
    def trainable(self) -> bool:
        return isinstance(self.centroids, nn.Parameter)

    def train_centroids(self) -> None:
        """Make the centroids a float32 parameter (same state-dict key; the codes stay fixed).
        Each centroid's gradient is averaged over the sub-vectors assigned to it."""
        counts = torch.bincount(self.codes.long().flatten(), minlength=self.centroids.size(0))  # (K,)
        centroids = nn.Parameter(self.centroids.detach().float().clone())
        del self._buffers["centroids"]
        self.centroids = centroids
        centroids.register_hook(lambda grad: grad / counts.clamp_min(1).to(grad)[:, None])

    def freeze(self) -> None:
        """Back to fp16 centroids stored as a buffer, the weight rebuilt once."""
        if self.trainable:
            centroids = self.centroids.detach().to(torch.float16)
            del self._parameters["centroids"]
            self.register_buffer("centroids", centroids)
        self.rebuild()


class PQLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool, block_size: int, centroids: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.pq = PQWeight(out_features, in_features, block_size, centroids)
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(cls, linear: nn.Linear, block_size: int, centroids: int, seed: int = 0) -> "PQLinear":
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, block_size, centroids)
        module.pq.set(*product_quantize(linear.weight, block_size, centroids, seed=seed))
        if linear.bias is not None:
            module.bias = linear.bias.detach().float().clone()
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.pq.current(), self.bias)


class PQEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None, block_size: int,
                 centroids: int):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.pq = PQWeight(num_embeddings, embedding_dim, block_size, centroids)

    @classmethod
    def from_float(cls, embedding: nn.Embedding, block_size: int, centroids: int, seed: int = 0) -> "PQEmbedding":
        module = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx, block_size, centroids)
        module.pq.set(*product_quantize(embedding.weight, block_size, centroids, seed=seed))
        return module

    @property
    def weight(self) -> torch.Tensor:
        return self.pq.current()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.pq.current(), self.padding_idx)
