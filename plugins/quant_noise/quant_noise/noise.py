"""Quantization noise in training: random blocks of a weight take the value the target scheme
would give them, with straight-through gradients; the stored weights are never changed.

Schemes: ``ipq``, the paper's proxy for product quantization (a noised block is dropped and the
others rescaled); ``centroid``, the exact product-quantization noise (a noised block takes its
nearest centroid in a codebook that k-means re-estimates from the weight every few uses, the
codebook ``toolkit-quantize`` would find); ``int8`` (a noised block takes its int8 value)."""

from __future__ import annotations

import re
import types

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.errors import ConfigError

from quant_noise.int8 import fake_int8
from quant_noise.kmeans import kmeans


class Codebook:
    """The centroids a weight's blocks would be product-quantized to, re-estimated by k-means
    (warm-started from the previous codebook) at the first use and every ``interval`` uses after.

    :param centroids: codebook size K (``toolkit-quantize --centroids``).
    :param block_size: weights per sub-vector (``--block-size``).
    """

    def __init__(self, centroids: int, block_size: int, interval: int, iterations: int = 5, seed: int = 0):
        self.size, self.block_size, self.interval = centroids, block_size, interval
        self.iterations, self.seed = iterations, seed
        self.centroids: torch.Tensor | None = None  # (K, b)
        self.uses = 0

    @property
    def refreshes(self) -> int:
        """How many times k-means has run: at use 0, interval, 2 * interval, ..."""
        return -(-self.uses // self.interval)

    def state_dict(self) -> dict:
        """What a resumed run needs to noise exactly as an uninterrupted one."""
        state = {"uses": self.uses}
        return state if self.centroids is None else {**state, "centroids": self.centroids.clone()}

    def load_state_dict(self, state: dict) -> None:
        centroids = state.get("centroids")
        if centroids is not None and centroids.shape != (self.size, self.block_size):
            raise ValueError(f"a saved codebook of shape {tuple(centroids.shape)}, expected {(self.size, self.block_size)}")
        self.uses, self.centroids = int(state["uses"]), centroids

    def current(self, weight: torch.Tensor) -> torch.Tensor:
        """(K, b) the codebook for this use of ``weight`` (rows, cols), refreshed when due."""
        if self.uses % self.interval == 0:
            points = weight.detach().reshape(-1, self.block_size)  # (rows * cols / b, b)
            first = self.centroids is None
            self.centroids, _ = kmeans(points, self.size, 20 if first else self.iterations, self.seed,
                                       init=self.centroids)
            self.centroids = self.centroids.to(weight.dtype)
        self.uses += 1
        return self.centroids

    @staticmethod
    def nearest(blocks: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        """(M, b) ``blocks`` -> (M, b) each one's nearest centroid."""
        return centroids.index_select(0, torch.cdist(blocks, centroids).argmin(dim=1))


def block_draws(weight: torch.Tensor, rate: float, block_size: int, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """(rows, cols / block_size) bool, True for the noised blocks: each block of ``block_size``
    consecutive weights of a row is chosen with probability ``rate``."""
    rows, cols = weight.shape
    return torch.rand(rows, cols // block_size, generator=generator, device=weight.device) < rate


def block_mask(weight: torch.Tensor, rate: float, block_size: int, generator: torch.Generator | None = None
               ) -> torch.Tensor:
    """(rows, cols) bool, True on the weights of the noised blocks (``block_draws`` spread over
    each block's weights)."""
    return block_draws(weight, rate, block_size, generator).repeat_interleave(block_size, dim=1)


def noised(weight: torch.Tensor, rate: float, block_size: int, scheme: str,
           generator: torch.Generator | None = None, straight_through: bool = True,
           codebook: Codebook | None = None) -> torch.Tensor:
    """The weight as this step sees it: chosen blocks dropped (iPQ, the others rescaled by
    1/(1-rate)), replaced by their nearest centroid in ``codebook`` (``centroid``), or by their
    int8 value. ``straight_through``: the gradient passes to every weight of ``weight`` unchanged
    (the paper); otherwise it follows the computation as written (fairseq's iPQ noise: a noised
    block gets none, the others theirs scaled by 1/(1-rate))."""
    if scheme == "centroid":
        target = _centroid_target(weight, block_draws(weight, rate, block_size, generator), codebook)
        return weight + (target - weight).detach() if straight_through else target
    mask = block_mask(weight, rate, block_size, generator)  # (rows, cols)
    if scheme == "ipq":
        target = weight.masked_fill(mask, 0.0) / (1.0 - rate)
    else:
        target = torch.where(mask, fake_int8(weight).detach(), weight)
    return weight + (target - weight).detach() if straight_through else target


def _centroid_target(weight: torch.Tensor, draws: torch.Tensor, codebook: Codebook) -> torch.Tensor:
    """(rows, cols): ``weight`` with the blocks chosen by ``draws`` (rows, cols / b) replaced by
    their nearest centroid (no gradient to the replaced blocks)."""
    rows, cols = weight.shape
    centroids = codebook.current(weight)  # (K, b)
    blocks = weight.reshape(rows, cols // codebook.block_size, codebook.block_size)  # (rows, cols/b, b)
    chosen = draws.nonzero(as_tuple=True)
    replaced = codebook.nearest(blocks.detach()[chosen], centroids)  # (M, b)
    return blocks.index_put(chosen, replaced).reshape(rows, cols)


def check_block_size(name: str, width: int, block_size: int) -> None:
    if width % block_size:
        raise ConfigError(f"quant_noise: block size {block_size} does not divide the width {width} of {name}")


def check_codebook(name: str, shape: torch.Size, block_size: int, centroids: int) -> None:
    blocks = shape[0] * shape[1] // block_size
    if centroids > blocks:
        raise ConfigError(f"quant_noise: {centroids} centroids for the {blocks} blocks of {name}")


def attach_noise(model: nn.Module, rates: dict[type, tuple[float, int]], scheme: str, modules: str = "",
                 straight_through: bool = True, centroids: int = 256, codebook_interval: int = 100) -> list[str]:
    """Make every ``nn.Linear`` and ``nn.Embedding`` of the model (those whose name the regular
    expression ``modules`` finds, if given) compute with a noised weight in training mode
    (``rates[kind] = (rate, block size)``; rate 0 leaves a kind alone). Returns the names of
    the modules changed; their state-dict keys do not change. ``straight_through``: see ``noised``.
    Scheme ``centroid``: each weight gets a ``Codebook`` of ``centroids`` (one per weight, shared
    by the modules that tie it) refreshed every ``codebook_interval`` uses."""
    changed = []
    codebooks: dict[int, Codebook] = {}  # id(weight) -> its codebook
    for name, module in model.named_modules():
        kind = nn.Embedding if isinstance(module, nn.Embedding) else nn.Linear if isinstance(module, nn.Linear) else None
        if kind is None or rates[kind][0] <= 0 or not re.search(modules, name):
            continue
        rate, block_size = rates[kind]
        check_block_size(name, module.weight.size(1), block_size)
        module.noise = (rate, block_size, scheme, straight_through)
        if scheme == "centroid":
            check_codebook(name, module.weight.shape, block_size, centroids)
            module.codebook = codebooks.setdefault(id(module.weight), Codebook(centroids, block_size, codebook_interval))
        module.forward = types.MethodType(_noisy_embedding if kind is nn.Embedding else _noisy_linear, module)
        changed.append(name)
    if modules and not changed and any(rate > 0 for rate, _ in rates.values()):
        raise ConfigError(f"plugins.options.quant_noise.modules={modules!r} matches no Linear or Embedding "
                          f"with a noise rate")
    return changed


def codebook_state(model: nn.Module) -> dict[str, dict]:
    """Scheme ``centroid``: {module name: its ``Codebook.state_dict()``} for every codebook of
    the model (a codebook shared by tied modules under the first name)."""
    state: dict[str, dict] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        codebook = getattr(module, "codebook", None)
        if codebook is not None and id(codebook) not in seen:
            seen.add(id(codebook))
            state[name] = codebook.state_dict()
    return state


def load_codebook_state(model: nn.Module, state: dict[str, dict]) -> None:
    """Restore what ``codebook_state`` saved into the codebooks of ``model``'s modules."""
    codebooks = {name: module.codebook for name, module in model.named_modules() if hasattr(module, "codebook")}
    unknown = sorted(set(state) - set(codebooks))
    if unknown:
        raise ConfigError(f"quant_noise: the checkpoint has codebooks for {unknown}, which this run does not noise "
                          f"with scheme centroid")
    for name, saved in state.items():
        codebooks[name].load_state_dict(saved)


def _weight(module: nn.Module) -> torch.Tensor:
    if not module.training:
        return module.weight
    rate, block_size, scheme, straight_through = module.noise
    return noised(module.weight, rate, block_size, scheme, straight_through=straight_through,
                  codebook=getattr(module, "codebook", None))


def _noisy_linear(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, _weight(self), self.bias)


def _noisy_embedding(self: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    return F.embedding(tokens, _weight(self), self.padding_idx, self.max_norm, self.norm_type,
                       self.scale_grad_by_freq, self.sparse)
