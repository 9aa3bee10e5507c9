"""Typed config schemas and the hydra wiring that composes them.

The top-level ``TrainConfig`` has one section per config group. Sections of registered kinds
(``task``, ``model``, ``criterion``, ``optim``, ``lr_scheduler``) are chosen by name; their
schemas are the dataclasses the registry stored in hydra's ConfigStore. The fixed sections
(``common``, ``dataset``, ``optimization``, ``checkpoint``, ``plugins``) are typed here and
have packaged YAML presets in ``toolkit/conf``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from toolkit.errors import ConfigError  # defined there: modules imported here raise it too
from toolkit.files import atomic_write_text
from toolkit.generation.generator import GenerationConfig

CONF_DIR = Path(__file__).parent / "conf"


@dataclass
class CommonConfig:
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + dynamic loss scaling)
    threads: Optional[int] = None  # torch intra-op threads; None keeps torch's default
    compile: bool = False  # torch.compile the model for training (dropout then draws from inductor's RNG)
    distributed_strategy: str = "ddp"  # under torchrun: ddp (replicated) | fsdp (sharded, FSDP2)
    log_interval: int = 50  # updates between training log lines
    log_format: str = "auto"  # auto (bar on a terminal, lines otherwise) | tqdm | simple | none
    tensorboard_dir: Optional[str] = "${checkpoint.save_dir}/tensorboard"  # null: off


@dataclass
class DatasetConfig:
    max_tokens: int = 4096  # per batch, padding included (batch rows x longest side)
    max_sentences: Optional[int] = None
    max_positions: int = 256  # longer pairs are skipped (and counted) when loading
    train_subset: str = "train"
    valid_subset: Optional[str] = "valid"  # null: train without validation (no best checkpoint)
    bucket_by_length: bool = True
    num_workers: int = 1  # background threads collating batches ahead (0: none)


@dataclass
class OptimizationConfig:
    max_epoch: int = 0  # 0: no limit
    max_update: int = 0  # 0: no limit
    max_time_minutes: float = 0.0  # stop (and save) after this much training time; 0: no limit
    clip_norm: float = 0.0  # 0: no clipping
    update_freq: int = 1  # batches accumulated per update
    validate_interval: int = 1  # epochs


@dataclass
class CheckpointConfig:
    save_dir: str = "checkpoints"
    keep_last_epochs: int = 3  # epoch checkpoints kept besides last and best (-1: all)
    save_interval_updates: int = 0  # also save `last` every N updates (0: at epoch end only)
    resume: bool = True  # continue from save_dir/checkpoint_last.pt when it exists
    # start from these model weights, with a fresh optimizer, schedule and epoch (ignored when
    # resuming); the vocabularies must be the checkpoint's: train on its run's task.destdir, or
    # on new data with task.tokenizers_from=the same checkpoint
    finetune_from: Optional[str] = None
    finetune_strict: bool = True  # false: parameters on one side only are listed and left as built
    best_metric: str = "loss"  # a validation metric; lower is better unless maximize
    maximize_best_metric: bool = False
    no_save: bool = False


@dataclass
class PluginsConfig:
    require: list[str] = field(default_factory=list)  # fail early unless these are loaded
    block: list[str] = field(default_factory=list)  # unregister these for this run
    # settings per plugin, typed by the dataclass it registered (registries.plugin_options)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ValidationConfig:
    bleu: bool = False  # also translate the valid split and report sacreBLEU (metric "bleu")
    max_sentences: int = 64
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class TrainConfig:
    task: Any = MISSING
    model: Any = MISSING
    criterion: Any = MISSING
    optim: Any = MISSING
    lr_scheduler: Any = MISSING
    common: CommonConfig = field(default_factory=CommonConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


@dataclass
class GenerateConfig:
    """``toolkit-generate``: what to translate, with which checkpoint, how, and where to."""

    path: str = MISSING  # the checkpoint; several joined by ":" decode as an ensemble (a.pt:b.pt)
    split: str = "test"  # a split of the checkpoint's data folder (references from its target side)
    input: Optional[str] = None  # translate this source file instead ("-": standard input)
    reference: Optional[str] = None  # references for input
    data: Optional[str] = None  # look for the split here instead of the checkpoint's task.data
    output: Optional[str] = None  # hypotheses file; default: beside the checkpoint
    fairseq_lines: bool = False  # also print S-/T-/H-/D-/P- lines for every sentence
    max_sentences: int = 64
    max_tokens: int = 16000
    interactive_buffer: int = 64  # piped standard input is translated this many lines at a time
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 | fp16: the weights' type while decoding (scores stay fp32)
    threads: Optional[int] = None
    workers: int = 1  # decoding processes on the CPU, sharing the threads (toolkit.generation.workers)
    # merged over the checkpoint's plugins.options before the model is rebuilt, e.g.
    # +plugin_options.my_pruner.decoder_layers_to_keep=[0,2,4]; each key must name a loaded plugin
    plugin_options: dict[str, Any] = field(default_factory=dict)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


_FIXED_SECTIONS = {
    "common": CommonConfig,
    "dataset": DatasetConfig,
    "optimization": OptimizationConfig,
    "checkpoint": CheckpointConfig,
    "plugins": PluginsConfig,
}


def register_schemas() -> None:
    """Store the top-level and fixed-section schemas that the packaged YAML files extend."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="generate_schema", node=GenerateConfig)
    for group, schema in _FIXED_SECTIONS.items():
        store.store(group=group, name=f"{group}_schema", node=schema)


def compose_train_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """Compose the packaged training config with command-line style overrides.

    The same composition ``toolkit-train`` does, for tests and notebooks.
    """
    from hydra import compose, initialize_config_dir

    from toolkit.plugins import get_plugins

    plugins = get_plugins()  # registers every component's schema first
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name=config_name, overrides=list(overrides or []))
    if "plugins" in cfg:
        resolve_plugin_options(cfg.plugins.options, plugins.registries, "plugins.options")
    return cfg


def resolve_plugin_options(options: DictConfig, registries: Any, where: str) -> None:
    """Type each plugin's entry of ``options`` (in place) by the dataclass the plugin registered:
    unknown keys and wrong types fail naming them, and the defaults are filled in. Entries of
    plugins that registered no options (or are not loaded) stay as given."""
    for plugin in list(options):
        schema = registries.plugin_options.schema(plugin)
        if schema is not None:
            options[plugin] = typed_plugin_options(plugin, options[plugin], schema, where)


def merge_plugin_options(options: Any, overrides: Any, registries: Any) -> DictConfig:
    """``overrides`` (``toolkit-generate``'s ``plugin_options``) over a checkpoint's options, typed."""
    merged = OmegaConf.merge(OmegaConf.create(options or {}), OmegaConf.create(dict(overrides)))
    resolve_plugin_options(merged, registries, "plugin_options")
    return merged


def parse_plugin_options(items: list[str]) -> dict[str, Any]:
    """``["my_pruner.decoder_layers_to_keep=[0,2]", ...]`` (command-line ``--plugin-option``s)
    as ``{"my_pruner": {"decoder_layers_to_keep": [0, 2]}}``; values are read as YAML."""
    for item in items:
        key = item.split("=", 1)[0]
        if "=" not in item or "." not in key or not all(key.split(".")):
            raise ConfigError(f"a plugin option is PLUGIN.KEY=VALUE, got {item!r}")
    return OmegaConf.to_container(OmegaConf.from_dotlist(list(items)), resolve=True)


def typed_plugin_options(plugin: str, given: Any, schema: type, where: str) -> DictConfig:
    """``given`` checked against ``schema`` with the schema's defaults filled in."""
    known = [f.name for f in dataclasses.fields(schema)]
    if given is None:
        given = {}
    if not isinstance(given, (dict, DictConfig)):
        raise ConfigError(f"{where}.{plugin} must be a mapping of options ({', '.join(known)}), got {given!r}")
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for plugin {plugin} ({where}.{plugin}); "
                          f"its options are: {', '.join(known)}")
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), given)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "") or ""
        message = str(error).splitlines()[0]
        raise ConfigError(f"{where}.{plugin}{'.' + key if key else ''}: {message}") from None


def validate_train_config(cfg: DictConfig) -> None:
    """Reject values that would only fail (or silently misbehave) later in a run."""
    problems = [f"unknown config key {key!r} (added with `+`?): not a field of its typed section"
                for key in _unknown_keys(cfg)]
    problems += [f"{key} must be a finite number, got {value}" for key, value in non_finite_values(cfg)]
    if cfg.optim.get("lr", 1.0) <= 0:
        problems.append(f"optim.lr must be positive, got {cfg.optim.lr}")
    if cfg.dataset.max_tokens <= 0:
        problems.append(f"dataset.max_tokens must be positive, got {cfg.dataset.max_tokens}")
    elif cfg.dataset.max_tokens < cfg.dataset.max_positions + 1:
        problems.append(
            f"dataset.max_tokens={cfg.dataset.max_tokens} is smaller than the longest allowed pair "
            f"(dataset.max_positions={cfg.dataset.max_positions} tokens + end of sentence): such "
            f"pairs could never be batched; raise max_tokens or lower max_positions"
        )
    if cfg.optimization.update_freq < 1:
        problems.append(f"optimization.update_freq must be >= 1, got {cfg.optimization.update_freq}")
    if cfg.optimization.clip_norm < 0:
        problems.append(f"optimization.clip_norm must be >= 0, got {cfg.optimization.clip_norm}")
    if cfg.common.precision not in ("fp32", "bf16", "fp16"):
        problems.append(f"common.precision must be fp32, bf16 or fp16, got {cfg.common.precision!r}")
    if cfg.common.distributed_strategy not in ("ddp", "fsdp"):
        problems.append(f"common.distributed_strategy must be ddp or fsdp, got {cfg.common.distributed_strategy!r}")
    if cfg.common.distributed_strategy == "fsdp" and cfg.validation.bleu:
        problems.append("validation.bleu needs the whole model on one rank: with common.distributed_strategy=fsdp, "
                        "score saved checkpoints with toolkit-generate instead")
    if cfg.common.log_format not in ("auto", "tqdm", "simple", "none"):
        problems.append(f"common.log_format must be auto, tqdm, simple or none, got {cfg.common.log_format!r}")
    if cfg.dataset.valid_subset is None and cfg.validation.bleu:
        problems.append("validation.bleu translates the valid split: set dataset.valid_subset (it is null)")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def non_finite_values(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    """``(dotted key, value)`` of every float in ``node`` (a config, nested mappings and lists)
    that is NaN or infinite: no setting means anything with such a value, and a learning rate
    of ``inf`` would train to NaN weights."""
    if isinstance(node, (DictConfig, ListConfig)):
        try:
            node = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
        except OmegaConfBaseException:  # an interpolation that fails here fails where it is read
            node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        items = ((f"{prefix}{key}", value) for key, value in node.items())
    elif isinstance(node, (list, tuple)):
        items = ((f"{prefix[:-1]}[{i}]", value) for i, value in enumerate(node))
    else:
        return [(prefix[:-1], node)] if isinstance(node, float) and not math.isfinite(node) else []
    found = []
    for key, value in items:
        found += non_finite_values(value, f"{key}.")
    return found


def _unknown_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys of dataclass-typed sections that their dataclass lacks (hydra's ``+key=value`` adds
    them even to typed configs, and nothing would ever read them)."""
    schema = OmegaConf.get_type(node)
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return []
    known = {f.name for f in dataclasses.fields(schema)}
    unknown = []
    for key, value in node.items_ex(resolve=False):
        if key not in known:
            unknown.append(f"{prefix}{key}")
        elif isinstance(value, DictConfig):
            unknown += _unknown_keys(value, f"{prefix}{key}.")
    return unknown


def save_config(cfg: DictConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
