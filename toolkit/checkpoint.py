"""Checkpoints, shared by training and inference: the format, safe loading, the plugins a
checkpoint needs, and the one writer of inference checkpoints.

A checkpoint is tensors and plain containers only, so ``torch.load(weights_only=True)`` reads
it: no pickled code runs when loading a file from elsewhere. Its ``plugins`` entry records, for
each plugin, the role it played (``roles``):

- ``"model"``: needed to rebuild the model (it provided the task, model or architecture, or its
  options registered ``role="model"``: added or replaced modules, quantized weights);
- ``"training"``: needed only to train it (a criterion, optimizer or schedule, a training-step
  wrapper, a teacher).

Inference (``toolkit-generate``, ``Translator.from_checkpoint``, the exporters) and fine-tuning
need only the first kind; resuming a run needs both.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

import toolkit
from toolkit.errors import NonFiniteError, UserError
from toolkit.files import atomic_write_with
from toolkit.plugins import PluginSession

logger = logging.getLogger(__name__)

MODEL, TRAINING = "model", "training"  # the roles a plugin plays for a checkpoint
# Registry kinds needed to rebuild the model. An architecture is only a preset of a model's
# config, whose every field the checkpoint stores: a plugin's architecture is needed to resume
# (the run composed its config from it), not to decode.
_MODEL_KINDS = {"task", "model"}


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read or does not fit this toolkit."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> int:
    """Write ``state`` atomically (temporary file, fsync, rename); returns the bytes on disk.

    :raises NonFiniteError: a floating-point weight of ``state["model"]`` is NaN or infinite
        (training diverged): such a file is never written.
    """
    bad = non_finite_weights(state.get("model") or {})
    if bad:
        update = f" at update {state['num_updates']}" if "num_updates" in state else ""
        raise NonFiniteError(f"refusing to write {path}: training diverged{update}, weights hold NaN or infinite "
                             f"values ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); lower optim.lr "
                             f"or set optimization.clip_norm")
    atomic_write_with(path, lambda f: torch.save(state, f))
    return Path(path).stat().st_size


def non_finite_weights(weights: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``weights`` holding a NaN or an infinity (one
    device sync per device when all are finite)."""
    tensors = {name: t for name, t in weights.items() if isinstance(t, torch.Tensor) and t.is_floating_point()}
    by_device: dict[torch.device, list[str]] = {}
    for name, tensor in tensors.items():
        by_device.setdefault(tensor.device, []).append(name)
    bad = []
    for names in by_device.values():
        finite = torch.stack([torch.isfinite(tensors[n]).all() for n in names])
        if not bool(finite.all()):
            bad += [n for n, ok in zip(names, finite.tolist()) if not ok]
    return bad


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU without running any code it might contain."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({path.stat().st_size} bytes): it is truncated, corrupt "
            f"or holds objects other than tensors and plain containers ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})") from error
    if not isinstance(state, dict) or "cfg" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a toolkit checkpoint (no cfg/model entries)")
    return state


# --- which plugins a checkpoint needs ---------------------------------------------------------


def plugin_records(cfg: DictConfig | Mapping, plugins: PluginSession,
                   roles: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``plugins`` entry of a checkpoint of a run configured by ``cfg``.

    :param roles: roles to add or raise (``{"my_quantizer": "model"}`` for a model only that plugin rebuilds);
        ``"model"`` always wins over ``"training"``.
    :return: ``{"versions": {plugin: version}, "providers": {kind: plugin}, "roles": {plugin: role}}``.
    """
    providers = plugins.registries.providers(cfg)
    found: dict[str, str] = {}

    def note(plugin: str, role: str) -> None:
        if plugin != "core":
            found[plugin] = MODEL if MODEL in (role, found.get(plugin)) else role

    for kind, plugin in providers.items():
        note(plugin, MODEL if kind in _MODEL_KINDS else TRAINING)
    registered = plugins.registries.plugin_options
    for plugin in _options_of(cfg):  # a plugin unknown here keeps the role recorded before, if any
        known = registered.schema(plugin) is not None or plugin not in (roles or {})
        note(plugin, registered.role(plugin) if known else roles[plugin])
    for plugin, role in (roles or {}).items():
        if role not in (MODEL, TRAINING):
            raise ValueError(f"a plugin's role is {MODEL!r} or {TRAINING!r}, got {role!r} for {plugin}")
        note(plugin, role)
    return {"versions": plugins.external(), "providers": providers, "roles": found}


def required_plugins(state: Mapping[str, Any], for_inference: bool) -> list[str]:
    """The plugins a checkpoint needs: to rebuild its model (``for_inference``), or to resume it.

    Checkpoints written before roles were recorded need every provider and options owner.
    """
    recorded = state.get("plugins", {})
    if "roles" in recorded:
        roles = recorded["roles"]
        unrecorded = set(_options_of(state.get("cfg", {}))) - set(roles) - {"core"}  # count as "model"
        return sorted({p for p, role in roles.items() if role == MODEL or not for_inference} | unrecorded)
    return sorted(set(recorded.get("providers", {}).values()) | set(_options_of(state.get("cfg", {}))) - {"core"})


def check_plugins(state: dict[str, Any], plugins: PluginSession, path: Path, for_inference: bool = False) -> None:
    """Fail naming each plugin the checkpoint needs (``required_plugins``) that is not loaded;
    warn about the others it was written with."""
    needed = required_plugins(state, for_inference)
    plugins.require(needed, why=f"checkpoint {path}" + (" (to rebuild its model)" if for_inference else ""))
    for name, version in state.get("plugins", {}).get("versions", {}).items():
        if name not in plugins.loaded() and name not in needed:
            logger.info("checkpoint %s was trained with plugin %s %s, which is not loaded (not needed here)",
                        path, name, version)


def load_checked(path: str | os.PathLike, plugins: PluginSession, for_inference: bool = False) -> dict[str, Any]:
    """A checkpoint, once the plugins it needs are known to be loaded (``check_plugins``)."""
    state = load_checkpoint(path)
    check_plugins(state, plugins, Path(path), for_inference)
    return state


def _options_of(cfg: Mapping | DictConfig) -> list[str]:
    return list((cfg.get("plugins") or {}).get("options") or {})


# --- fine-tuning ------------------------------------------------------------------------------


def initialize_from(path: Path, model: torch.nn.Module, task, plugins: PluginSession, strict: bool = True) -> None:
    """Load a checkpoint's model weights into a freshly built ``model`` (fine-tuning).

    The run's task must hold the same vocabularies and tokenizers as the checkpoint's, so each
    embedding row keeps its meaning; ``strict=False`` tolerates parameters on one side only
    (a plugin's new heads), listing them. Only the plugins that shape its model are needed.
    """
    state = load_checked(path, plugins, for_inference=True)
    if not same_state(state["task"], task.state_dict()):
        raise CheckpointError(f"cannot fine-tune from {path}: its vocabularies or tokenizers differ from this "
                              f"run's; train on the data its run prepared (task.destdir=<that run>/data-bin) "
                              f"or binarize new data with its tokenizers (task.tokenizers_from={path})")
    try:
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
    except RuntimeError as error:  # shapes that differ
        raise CheckpointError(f"cannot fine-tune from {path}: {error}") from error
    if missing or unexpected:
        listing = f"missing from the checkpoint: {missing or 'none'}; not in this model: {unexpected or 'none'}"
        if strict:
            raise CheckpointError(f"cannot fine-tune from {path}: {listing} (checkpoint.finetune_strict=false "
                                  f"keeps the rest)")
        logger.warning("fine-tuning from %s without some parameters; %s", path, listing)
    logger.info("model weights from %s (update %d); optimizer, schedule and epoch start fresh", path,
                state.get("num_updates", 0))


def same_state(a: Any, b: Any) -> bool:
    """Equality through nested dicts and lists, tensors compared by value."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(
            torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


# --- inference checkpoints --------------------------------------------------------------------


def save_inference_checkpoint(path: str | os.PathLike, cfg: DictConfig | Mapping, task, model: torch.nn.Module,
                              plugins: PluginSession, roles: Mapping[str, str] | None = None,
                              plugin_state: Mapping[str, Any] | None = None, verify: bool = True,
                              **metadata: Any) -> int:
    """Write a checkpoint that ``toolkit-generate`` loads: config, vocabularies, weights, plugin
    records; no optimizer or iterator state. Returns its bytes on disk.

    This is the one writer of averaged, pruned, quantized and distilled models.

    :param cfg: the run config describing ``model`` as it is now (e.g. ``cfg.model.decoder_layers``
        after pruning); with ``verify`` the model is rebuilt from it (with the plugins that shape
        it) and must take ``model``'s weights exactly, so a file that would not load is never written.
    :param roles: plugins to record beyond what ``cfg`` names, e.g. ``{"my_quantizer": "model"}``
        for weights only that plugin's modules read.
    :param plugin_state: the plugins' state (``toolkit_checkpoint_state``'s format) to carry.
    :param metadata: plain entries to keep, e.g. ``num_updates``, ``averaged_from``, ``pruned_from``.
    """
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    weights = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    state = {"cfg": container, "task": task.state_dict(), "model": weights,
             "plugins": plugin_records(container, plugins, roles), "plugin_state": dict(plugin_state or {}),
             "toolkit_version": toolkit.__version__, "inference_only": True, **metadata}
    if verify:
        check_rebuilds(state, plugins)
    size = save_checkpoint(state, path)
    logger.info("wrote %s: %s parameters, %s bytes", path, f"{count_parameters(weights):,}", f"{size:,}")
    return size


def check_rebuilds(state: dict[str, Any], plugins: PluginSession) -> None:
    """Fail unless the model that ``state["cfg"]`` describes takes ``state["model"]`` exactly."""
    from toolkit.inference import rebuild_model

    cfg = OmegaConf.create(state["cfg"])
    try:
        _, model = rebuild_model(cfg, state, plugins)
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as error:
        raise CheckpointError(f"the config does not describe this model (set its model section as the model "
                              f"now is, e.g. a pruned depth): {error}") from error


def count_parameters(weights: Mapping[str, torch.Tensor]) -> int:
    """Elements of a state dict's tensors, a tensor shared by several keys (tied embeddings and
    output projection) counted once, as ``model.parameters()`` counts it."""
    distinct = {(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride())): t.numel()
                for t in weights.values()}
    return sum(distinct.values())


def describe(path: str | os.PathLike, model: torch.nn.Module) -> str:
    """``"PATH: N parameters, B bytes on disk"``: what the benchmarks and toolkit-generate print."""
    return (f"{path}: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{Path(path).stat().st_size:,} bytes on disk")
