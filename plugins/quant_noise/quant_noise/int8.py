"""int8 weights: per-output-channel symmetric quantization, decoded on the CPU with integer GEMMs
(``torch.ops.quantized.linear_dynamic``: activations quantized per batch, int8 x int8 products
accumulated in int32).

The kernels are oneDNN's where the CPU has VNNI (AVX512-VNNI, AVX-VNNI; AMX where present), with
8-bit activations; elsewhere PyTorch's default engine (fbgemm) with 7-bit activations, which its
AVX2 path needs to avoid saturating. On this project's 2-core Xeon (AMX, AVX512-VNNI),
``python -m quant_noise.bench_kernels --threads 1`` ran the 320 x 256 -> 1024 product in 0.31 ms
with oneDNN, 0.58-0.64 with fbgemm and 1.20 in float32; the 320 x 256 -> 8000 output projection
in 1.65, 8.37 and 14.00 ms (see the README for the whole table).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def kernel_engine() -> tuple[str, bool]:
    """The quantized engine to pack weights with, and whether activations keep only 7 bits."""
    if "onednn" in torch.backends.quantized.supported_engines and torch.cpu._is_vnni_supported():
        return "onednn", False
    return torch.backends.quantized.engine, True


@contextlib.contextmanager
def quantized_engine(name: str) -> Iterator[None]:
    """Pack with engine ``name``; the packed weight keeps its kernels whatever the engine later."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def pack_weight(values: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, engine: str):
    """The packed form of int8 ``values`` (rows, cols) with per-row ``scale`` for ``engine``'s
    ``linear_dynamic`` kernel."""
    with warnings.catch_warnings(), quantized_engine(engine):  # quantized tensors: the kernel's input format
        warnings.simplefilter("ignore")
        weight = torch._make_per_channel_quantized_tensor(
            values, scale.double(), torch.zeros(len(scale), dtype=torch.long), 0)
        return torch.ops.quantized.linear_prepack(weight, bias)


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) float -> int8 values (rows, cols) and float32 scales (rows,): w ~ q * scale."""
    scale = weight.detach().abs().amax(dim=1).float().clamp_min(1e-12) / 127.0  # (rows,)
    values = torch.clamp(torch.round(weight.detach().float() / scale[:, None]), -127, 127).to(torch.int8)
    return values, scale


def fake_int8(weight: torch.Tensor) -> torch.Tensor:
    """The weight rounded to its int8 grid, in its own dtype (the int8 noise of training)."""
    values, scale = quantize_rows(weight)
    return (values.float() * scale[:, None]).to(weight.dtype)


class Int8Linear(nn.Module):
    """A linear layer with int8 weights and float32 scales and bias, computing with integer
    kernels on the CPU. Its state dict holds plain tensors (``weights_only`` loads it); the
    kernel's packed form is built once after loading."""

    supported_devices = ("cpu",)
    supported_dtypes = (torch.float32,)

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed, self._reduce_range = None, True
        self.register_load_state_dict_post_hook(lambda module, _: module.pack())

    @classmethod
    def from_float(cls, linear: nn.Linear) -> "Int8Linear":
        module = cls(linear.in_features, linear.out_features, linear.bias is not None)
        module.weight_int8, module.scale = quantize_rows(linear.weight)
        if linear.bias is not None:
            module.bias = linear.bias.detach().float().clone()
        module.pack()
        return module

    def pack(self) -> None:
        """Build the kernel's packed weight from the int8 values and scales (once per load)."""
        engine, self._reduce_range = kernel_engine()
        self._packed = pack_weight(self.weight_int8, self.scale, self.bias, engine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # fine-tuning around a frozen int8 layer: the integer kernel has no backward
            return F.linear(x, self.dequantized(), self.bias)
        flat = x.reshape(-1, self.in_features).contiguous()  # (N, in)
        out = torch.ops.quantized.linear_dynamic(flat, self._packed, self._reduce_range)  # (N, out)
        return out.reshape(*x.shape[:-1], self.out_features)

    def dequantized(self) -> torch.Tensor:
        return self.weight_int8.float() * self.scale[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows and scales; the float table is rebuilt once after
    loading (a lookup is not a product: it gains nothing from integer kernels)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(num_embeddings))
        self.register_buffer("weight", torch.zeros(num_embeddings, embedding_dim), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _: module.rebuild())

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> "Int8Embedding":
        module = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx)
        module.weight_int8, module.scale = quantize_rows(embedding.weight)
        module.rebuild()
        return module

    def rebuild(self) -> None:
        self.weight = self.weight_int8.float() * self.scale[:, None]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.weight, self.padding_idx)
