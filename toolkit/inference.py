"""Rebuilding a trained model for decoding: the path ``toolkit-generate``, the translator, the
benchmarks and the exporters share (it imports nothing of the training loop)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from toolkit.checkpoint import CheckpointError, describe, load_checked, same_state
from toolkit.config import merge_plugin_options, resolve_plugin_options
from toolkit.devices import check_placement, resolve_device
from toolkit.errors import ConfigError
from toolkit.models.ensemble import EnsembleModel
from toolkit.plugins import PluginSession, get_plugins
from toolkit.precision import dtype_of


def rebuild_model(cfg: DictConfig, state: Mapping[str, Any], plugins: PluginSession) -> tuple[Any, torch.nn.Module]:
    """The task (with the checkpoint's vocabularies) and the model its config describes, as
    built and changed by plugins (``toolkit_modify_model``), before any weights are loaded.
    Plugin options are typed by the schemas registered now, so an option a plugin added after
    the checkpoint was written takes its default."""
    if "plugins" in cfg:
        resolve_plugin_options(cfg.plugins.options, plugins.registries, "the checkpoint's plugins.options")
    task = plugins.registries.task.build(cfg.task, cfg)
    task.load_state_dict(state["task"])
    model = task.build_model(plugins.registries, cfg.model)
    plugins.hook.toolkit_modify_model(model=model, cfg=cfg)
    return task, model


def load_for_inference(path: str | os.PathLike, plugins: PluginSession | None = None, device: str = "auto",
                       plugin_options: Mapping[str, Any] | None = None, precision: str = "fp32",
                       state: dict | None = None) -> tuple[DictConfig, Any, torch.nn.Module, dict]:
    """Rebuild task and model from a checkpoint's own config: ``(cfg, task, model, state)``.

    Only the plugins that shape the model must be loaded (``toolkit.checkpoint``). The model is
    in eval mode, on ``device``, its floating-point weights in ``precision``; a device or
    precision that one of its modules cannot run in fails before the model moves.

    :param plugin_options: ``{plugin: {key: value}}`` merged over the checkpoint's
        ``plugins.options`` and checked against each plugin's registered options; plugins read
        them in ``toolkit_modify_model``, ``toolkit_weights_loaded`` and
        ``toolkit_prepare_inference``.
    :param state: the checkpoint at ``path`` when the caller has already read it
        (``load_checked(path, plugins, for_inference=True)``), so it is not read twice.
    """
    plugins = plugins or get_plugins()
    target, dtype = resolve_device(device), dtype_of(precision)
    state = state if state is not None else load_checked(path, plugins, for_inference=True)
    cfg = OmegaConf.create(state["cfg"])
    if plugin_options:
        plugins.require_options_owners(plugin_options, "plugin_options")
        cfg.plugins.options = merge_plugin_options(cfg.plugins.options, plugin_options, plugins.registries)
    task, model = rebuild_model(cfg, state, plugins)
    check_placement(model, target, dtype)  # before the weights load (again below: the hooks may swap modules)
    load_weights(model, state["model"], path)
    plugins.hook.toolkit_load_checkpoint_state(state=state.get("plugin_state", {}), trainer=None)
    plugins.hook.toolkit_weights_loaded(model=model, cfg=cfg, origin="inference")
    model.eval()
    plugins.hook.toolkit_prepare_inference(model=model, cfg=cfg)
    check_placement(model, target, dtype)
    model = model.to(target)
    if dtype != torch.float32:
        model = model.to(dtype)
    return cfg, task, model, state


def checkpoint_paths(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The checkpoints ``path`` names: a list as given, or one string naming several separated by
    ``:`` (an ensemble, as fairseq's ``--path a.pt:b.pt``) unless the whole string is a file."""
    if isinstance(path, (str, os.PathLike)):
        text = os.fspath(path)
        if os.pathsep in text and not Path(text).is_file():
            return [Path(p) for p in text.split(os.pathsep)]
        return [Path(text)]
    return [Path(p) for p in path]


def load_ensemble_for_inference(paths: Sequence[str | os.PathLike], plugins: PluginSession | None = None,
                                device: str = "auto", plugin_options: Mapping[str, Any] | None = None,
                                precision: str = "fp32", state: dict | None = None,
                                ) -> tuple[DictConfig, Any, torch.nn.Module, dict]:
    """``load_for_inference`` for one checkpoint, or an ``EnsembleModel`` of several: ``(cfg,
    task, model, state)`` with the first checkpoint's config, task and state (``state``: the
    first checkpoint, when the caller has read it). The checkpoints must share tokenizers and
    vocabularies (a clear error names the one that differs)."""
    if len(paths) == 1:
        return load_for_inference(paths[0], plugins, device, plugin_options, precision, state=state)
    plugins = plugins or get_plugins()
    states = [state if i == 0 and state is not None else load_checked(p, plugins, for_inference=True)
              for i, p in enumerate(paths)]
    check_same_vocabularies([s["task"] for s in states], [str(p) for p in paths])  # before any model is built
    loaded = [load_for_inference(p, plugins, device, plugin_options, precision, state=s) for p, s in zip(paths, states)]
    cfg, task, _, state = loaded[0]
    return cfg, task, EnsembleModel([model for _, _, model, _ in loaded]).eval(), state


def check_same_vocabularies(task_states: Sequence[Mapping[str, Any]], names: Sequence[str]) -> None:
    """Fail naming the first checkpoint whose tokenizers (and so vocabularies) differ from the
    first's: an ensemble averages distributions over one target vocabulary, read from one
    segmentation of the source. ``task_states``: each checkpoint's ``state["task"]``."""
    first = task_states[0]
    for state, name in zip(task_states[1:], names[1:]):
        for side, which in (("src_tokenizer", "source"), ("tgt_tokenizer", "target")):
            if not same_state(first.get(side), state.get(side)):
                raise ConfigError(f"cannot ensemble {names[0]} with {name}: their {which} tokenizers or "
                                  f"vocabularies differ (an ensemble's models must share them)")


def describe_checkpoints(paths: Sequence[str | os.PathLike], model: torch.nn.Module) -> str:
    """``describe`` of each checkpoint: an ensemble's members in order, separated by "; "."""
    members = model.members if isinstance(model, EnsembleModel) else [model]
    return "; ".join(describe(path, member) for path, member in zip(paths, members))


def load_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """``model.load_state_dict(weights)``; weights that do not fit the model the file's config
    describes (a shape, a missing key, a value a module's load hook refuses) name the file."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, CheckpointError) as error:  # load_state_dict's shape/key errors; a module's own
        first = str(error).strip().splitlines()
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes, the file is corrupt "
                              f"({type(error).__name__}: {' '.join(line.strip() for line in first[:3])})") from error
