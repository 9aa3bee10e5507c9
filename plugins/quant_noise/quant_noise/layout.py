"""Which modules a quantized model stores how: a layout ``{module name: spec}`` chosen for a
scheme, applied to a float model either from its weights (quantizing) or empty (rebuilding a
quantized checkpoint before its state dict loads). Specs: ``int8``, ``ipq:BLOCK:CENTROIDS``."""

from __future__ import annotations

from torch import nn

from toolkit.errors import ConfigError

from quant_noise.int8 import Int8Embedding, Int8Linear
from quant_noise.ipq import PQEmbedding, PQLinear, check_pq

SCHEMES = ("int8", "ipq", "ipq+int8")
FFN = ("ffn.fc1", "ffn.fc2")


def plan(model: nn.Module, scheme: str, block_size: int, centroids: int, embedding_block_size: int,
         keep_float: tuple[str, ...] = (), embedding_centroids: int | None = None) -> dict[str, str]:
    """The layout of ``scheme``: int8 or iPQ everywhere, or iPQ for embeddings and feed-forward
    matrices with int8 for the rest (the paper's combination). ``keep_float`` may hold
    ``embeddings`` (tables and the tied output layer stay float) or ``output``.
    ``embedding_centroids`` (default ``centroids``) sizes the codebooks of the embedding tables
    and the output layer (where ``ipq8`` loses half of its BLEU on the README's model)."""
    if scheme not in SCHEMES:
        raise ConfigError(f"--scheme must be one of {SCHEMES}, got {scheme!r}")
    ipq = f"ipq:{block_size}:{centroids}"
    embedding_ipq = f"ipq:{embedding_block_size}:{embedding_centroids or centroids}"
    layout = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, nn.Embedding) and "embeddings" not in keep_float:
            layout[name] = "int8" if scheme == "int8" else embedding_ipq
        elif isinstance(module, nn.Linear):
            output = name == "decoder.output_projection"
            if (output and "output" in keep_float) or (output and "embeddings" in keep_float):
                continue
            large = name.endswith(FFN)
            layout[name] = "int8" if scheme == "int8" or (scheme == "ipq+int8" and not large and not output) else (
                embedding_ipq if output else ipq)
    check_layout(model, layout)
    return layout


def check_layout(model: nn.Module, layout: dict[str, str]) -> None:
    """Every named module exists and every iPQ spec fits its weight (before any work)."""
    modules = dict(model.named_modules(remove_duplicate=False))
    for name, spec in layout.items():
        if name not in modules:
            raise ConfigError(f"quantized layout names {name!r}, which this model does not have")
        if spec.startswith("ipq:"):
            block_size, centroids = parse_ipq(spec)
            check_pq(name, tuple(modules[name].weight.shape), block_size, centroids)
        elif spec != "int8":
            raise ConfigError(f"quantized layout: unknown spec {spec!r} for {name}")


def parse_ipq(spec: str) -> tuple[int, int]:
    _, block_size, centroids = spec.split(":")
    return int(block_size), int(centroids)


def apply_layout(model: nn.Module, layout: dict[str, str], from_weights: bool) -> None:
    """Replace the layout's modules in place: quantized from their weights (``from_weights``),
    or empty, to receive a quantized state dict. Modules shared by several names (tied
    embeddings) stay shared; a tied output layer shares its embedding's quantized weight."""
    replaced: dict[int, nn.Module] = {}
    modules = dict(model.named_modules(remove_duplicate=False))
    for name, spec in layout.items():
        old = modules[name]
        if id(old) not in replaced:
            replaced[id(old)] = _quantized(old, spec, from_weights)
        _set(model, name, replaced[id(old)])
    _tie_output(model, modules, replaced)


def _quantized(module: nn.Module, spec: str, from_weights: bool) -> nn.Module:
    embedding = isinstance(module, nn.Embedding)
    if spec == "int8":
        if from_weights:
            return (Int8Embedding if embedding else Int8Linear).from_float(module)
        return Int8Embedding(module.num_embeddings, module.embedding_dim, module.padding_idx) if embedding else \
            Int8Linear(module.in_features, module.out_features, module.bias is not None)
    block_size, centroids = parse_ipq(spec)
    if from_weights:
        return (PQEmbedding if embedding else PQLinear).from_float(module, block_size, centroids)
    if embedding:
        return PQEmbedding(module.num_embeddings, module.embedding_dim, module.padding_idx, block_size, centroids)
    return PQLinear(module.in_features, module.out_features, module.bias is not None, block_size, centroids)


def _tie_output(model: nn.Module, modules: dict[str, nn.Module], replaced: dict[int, nn.Module]) -> None:
    """The decoder's output layer tied to its embedding table keeps one copy of the weight."""
    decoder = getattr(model, "decoder", None)
    output, table = modules.get("decoder.output_projection"), modules.get("decoder.embedding.embed_tokens")
    if decoder is None or output is None or table is None or output.weight is not table.weight:
        return
    new_output, new_table = replaced.get(id(output)), replaced.get(id(table))
    if isinstance(new_output, Int8Linear) and isinstance(new_table, Int8Embedding):
        new_output.weight_int8, new_output.scale = new_table.weight_int8, new_table.scale
        new_output.pack()
    elif isinstance(new_output, PQLinear) and isinstance(new_table, PQEmbedding) and (
            new_output.pq.block_size == new_table.pq.block_size):
        new_output.pq = new_table.pq


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
