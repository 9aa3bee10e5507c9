"""Composition, validation and saving of training configs (toolkit.config)."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from toolkit.config import (CommonConfig, ConfigError, DatasetConfig, compose_train_config, save_config,
                            validate_train_config)
from toolkit.models.transformer import TransformerConfig
from toolkit.tasks.translation import TranslationConfig


@pytest.fixture(scope="module")
def default_cfg():
    return compose_train_config()


def _root_causes(error: BaseException) -> str:
    """The messages of an exception and everything it was raised from."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


# --- composition ------------------------------------------------------------------------------


def test_default_composition_is_the_toy_demo(default_cfg):
    cfg = default_cfg
    assert cfg.task._name == "translation" and cfg.task.data is None
    assert cfg.task.vocab_size == 1000 and cfg.task.toy_pairs == 20000
    assert cfg.model._name == "transformer" and cfg.model.arch == "transformer_tiny"
    assert (cfg.model.encoder_layers, cfg.model.decoder_layers, cfg.model.encoder_embed_dim) == (2, 2, 128)
    assert cfg.criterion._name == "label_smoothed_cross_entropy" and cfg.criterion.label_smoothing == 0.1
    assert cfg.optim._name == "adam" and cfg.optim.lr == 2e-3
    assert cfg.lr_scheduler._name == "inverse_sqrt" and cfg.lr_scheduler.warmup_updates == 200
    assert cfg.dataset.max_tokens == 2048 and cfg.optimization.max_epoch == 5
    assert cfg.checkpoint.save_dir == "checkpoints" and list(cfg.plugins.require) == []


def test_default_composition_is_typed(default_cfg):
    assert OmegaConf.get_type(default_cfg.task) is TranslationConfig
    assert OmegaConf.get_type(default_cfg.model) is TransformerConfig
    assert OmegaConf.get_type(default_cfg.common) is CommonConfig
    assert OmegaConf.get_type(default_cfg.dataset) is DatasetConfig
    assert isinstance(default_cfg.optim.lr, float) and isinstance(default_cfg.model.encoder_layers, int)
    cfg = default_cfg.copy()
    with pytest.raises(ValidationError):
        cfg.model.encoder_layers = "many"
    with pytest.raises(Exception, match="nope"):
        cfg.model.nope = 1  # struct mode: no new keys


def test_interpolations_follow_the_save_dir():
    cfg = compose_train_config(["checkpoint.save_dir=/tmp/somewhere"])
    assert cfg.task.destdir == "/tmp/somewhere/data-bin"
    assert cfg.common.tensorboard_dir == "/tmp/somewhere/tensorboard"


def test_iwslt_architecture_and_overrides():
    cfg = compose_train_config(["model=transformer_iwslt_de_en", "optim.lr=5e-4", "task.data=/x"])
    m = cfg.model
    assert m._name == "transformer" and m.arch == "transformer_iwslt_de_en"
    assert (m.encoder_layers, m.decoder_layers) == (6, 6)
    assert (m.encoder_embed_dim, m.decoder_embed_dim) == (512, 512)
    assert (m.encoder_ffn_dim, m.decoder_ffn_dim) == (1024, 1024)
    assert (m.encoder_attention_heads, m.decoder_attention_heads) == (4, 4)
    assert m.dropout == 0.3
    assert cfg.optim.lr == 5e-4 and cfg.task.data == "/x"


def test_small_architecture():
    m = compose_train_config(["model=transformer_small"]).model
    assert m.arch == "transformer_small"
    assert (m.encoder_layers, m.decoder_layers) == (3, 3)
    assert (m.encoder_embed_dim, m.decoder_embed_dim) == (256, 256)
    assert (m.encoder_ffn_dim, m.decoder_ffn_dim) == (1024, 1024)
    assert (m.encoder_attention_heads, m.decoder_attention_heads) == (4, 4)
    assert m.share_all_embeddings is True


def test_depth_adaptive_architecture():
    m = compose_train_config(["model=transformer_depth_adaptive_iwslt"]).model
    assert (m.encoder_embed_dim, m.decoder_embed_dim) == (512, 256)
    assert m.share_all_embeddings is False and m.share_decoder_input_output_embed is False


def test_base_architecture_and_the_bare_model():
    base = compose_train_config(["model=transformer_base"]).model
    assert (base.encoder_layers, base.encoder_embed_dim, base.encoder_ffn_dim, base.encoder_attention_heads) \
        == (6, 512, 2048, 8)
    bare = compose_train_config(["model=transformer", "model.encoder_layers=1"]).model
    assert bare.arch is None and bare.encoder_layers == 1 and bare.decoder_layers == 6


def test_architecture_fields_can_be_overridden():
    m = compose_train_config(["model=transformer_small", "model.decoder_layers=1", "model.dropout=0"]).model
    assert m.decoder_layers == 1 and m.encoder_layers == 3 and m.dropout == 0.0


@pytest.mark.parametrize("task, data, source, target, vocab", [
    ("multi30k_de_en", "../shared/data/multi30k-task1", "de", "en", 8000),
    ("iwslt14_de_en", "../shared/data/iwslt14-de-en", "de", "en", 10000),
    ("translation", None, "src", "tgt", 8000),
])
def test_task_presets(task, data, source, target, vocab):
    t = compose_train_config([f"task={task}"]).task
    assert t._name == "translation"
    assert (t.data, t.source_lang, t.target_lang, t.vocab_size) == (data, source, target, vocab)


@pytest.mark.parametrize("name, field, value", [("fixed", "_name", "fixed"), ("cosine", "_name", "cosine")])
def test_other_lr_schedulers_compose(name, field, value):
    assert compose_train_config([f"lr_scheduler={name}"]).lr_scheduler[field] == value


def test_debug_options_compose():
    cfg = compose_train_config(["common=debug", "optimization=debug"])
    assert cfg.common.log_interval == 1 and cfg.common.log_format == "simple"
    assert cfg.optimization.max_update == 1
    assert cfg.common.seed == 1 and cfg.optimization.update_freq == 1  # the rest keeps its defaults
    assert OmegaConf.get_type(cfg.common) is CommonConfig
    validate_train_config(cfg)


# --- composition errors -----------------------------------------------------------------------


def test_unknown_key_is_rejected_naming_it():
    with pytest.raises(ConfigCompositionException, match=r"optim\.nope"):
        compose_train_config(["optim.nope=1"])
    with pytest.raises(ConfigCompositionException, match="nope"):
        compose_train_config(["nope=1"])


@pytest.mark.parametrize("override, key", [
    ("+model.nope=1", "model.nope"),
    ("+common.log_intervall=1", "common.log_intervall"),  # hydra's error suggests this very `+`
    ("+optim.nope=1", "optim.nope"),
    ("+newsection.x=1", "newsection"),
])
def test_appending_an_unknown_key_to_a_typed_section_is_rejected(override, key):
    # hydra's `+` appends even to typed sections; the key would be silently ignored by the run
    cfg = compose_train_config([override])
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        validate_train_config(cfg)


def test_plugin_options_are_free_form():
    cfg = compose_train_config(["+plugins.options.myplug={alpha: 1}"])
    assert cfg.plugins.options.myplug.alpha == 1
    validate_train_config(cfg)


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigCompositionException) as info:
        compose_train_config(["optim.lr=abc"])
    messages = _root_causes(info.value)
    assert "optim.lr=abc" in messages and "abc" in messages
    with pytest.raises(ConfigCompositionException):
        compose_train_config(["model.encoder_layers=1.5"])
    with pytest.raises(ConfigCompositionException):
        compose_train_config(["common.threads=two"])


def test_unknown_group_option_is_rejected_listing_the_options():
    with pytest.raises(MissingConfigException) as info:
        compose_train_config(["model=nope"])
    message = str(info.value)
    assert "model/nope" in message and "transformer_tiny" in message
    with pytest.raises(MissingConfigException, match="criterion/nope"):
        compose_train_config(["criterion=nope"])


# --- validation -------------------------------------------------------------------------------


def test_defaults_are_valid(default_cfg):
    validate_train_config(default_cfg)


@pytest.mark.parametrize("lr", ["-1e-3", "0"])
def test_non_positive_lr_is_rejected(lr):
    with pytest.raises(ConfigError, match=f"optim.lr must be positive, got {float(lr)}"):
        validate_train_config(compose_train_config([f"optim.lr={lr}"]))


def test_max_tokens_below_max_positions_is_rejected_naming_both():
    cfg = compose_train_config(["dataset.max_tokens=100", "dataset.max_positions=100"])
    with pytest.raises(ConfigError) as info:
        validate_train_config(cfg)
    message = str(info.value)
    assert "dataset.max_tokens=100" in message and "dataset.max_positions=100" in message
    # one more token than the longest pair (its end of sentence) is enough
    validate_train_config(compose_train_config(["dataset.max_tokens=101", "dataset.max_positions=100"]))


def test_non_positive_max_tokens_is_rejected():
    with pytest.raises(ConfigError, match="dataset.max_tokens must be positive, got 0"):
        validate_train_config(compose_train_config(["dataset.max_tokens=0"]))


@pytest.mark.parametrize("override, message", [
    ("common.precision=fp64", "common.precision must be fp32, bf16 or fp16, got 'fp64'"),
    ("common.log_format=xml", "common.log_format must be"),
    ("optimization.update_freq=0", "optimization.update_freq must be >= 1"),
    ("optimization.clip_norm=-1", "optimization.clip_norm must be >= 0"),
    ("common.distributed_strategy=zero3", "common.distributed_strategy must be ddp or fsdp, got 'zero3'"),
    ("common.distributed_strategy=fsdp validation.bleu=true", "validation.bleu needs the whole model on one rank"),
])
def test_bad_values_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        validate_train_config(compose_train_config(override.split()))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_every_precision_is_accepted(precision):
    validate_train_config(compose_train_config([f"common.precision={precision}"]))


def test_every_problem_is_reported_at_once():
    cfg = compose_train_config(["optim.lr=-1", "common.precision=fp64", "dataset.max_tokens=10"])
    with pytest.raises(ConfigError) as info:
        validate_train_config(cfg)
    message = str(info.value)
    assert "optim.lr" in message and "common.precision" in message and "dataset.max_tokens=10" in message


# --- saving -----------------------------------------------------------------------------------


def test_save_config_round_trips(tmp_path):
    cfg = compose_train_config([f"checkpoint.save_dir={tmp_path / 'run'}", "model=transformer_small"])
    path = tmp_path / "nested" / "dir" / "config.yaml"
    save_config(cfg, path)
    assert path.is_file() and list(path.parent.iterdir()) == [path]  # no temporary file left
    loaded = OmegaConf.load(path)
    assert OmegaConf.to_container(loaded) == OmegaConf.to_container(cfg, resolve=True)
    text = path.read_text()
    assert "${" not in text  # interpolations are written resolved
    assert loaded.common.tensorboard_dir == f"{tmp_path / 'run'}/tensorboard"
    assert loaded.model.arch == "transformer_small" and loaded.task.data is None


def test_save_config_overwrites(tmp_path):
    path = tmp_path / "config.yaml"
    save_config(compose_train_config(["optim.lr=1e-3"]), path)
    save_config(compose_train_config(["optim.lr=3e-4"]), path)
    assert OmegaConf.load(path).optim.lr == 3e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
