"""Helpers of the layerdrop tests: a plugin session and a small toy config."""

from __future__ import annotations

from toolkit.config import compose_train_config
from toolkit.plugins import load_plugins

import layerdrop.plugin

# a 4+4 model, small enough to train in seconds
SMALL = ["task.toy_pairs=600", "task.vocab_size=200", "task.splits=[train,valid,test]", "model.encoder_layers=4",
         "model.decoder_layers=4", "model.encoder_embed_dim=32", "model.decoder_embed_dim=32",
         "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64", "dataset.max_tokens=256",
         "dataset.max_positions=64", "common.log_format=none", "common.threads=1",
         "lr_scheduler.warmup_updates=5", "common.tensorboard_dir=null"]
RATES = ["+plugins.options.layerdrop.encoder_rate=0.5", "+plugins.options.layerdrop.decoder_rate=0.5"]


def session():
    return load_plugins(autoload=False, extra=[("layerdrop", layerdrop.plugin)])


def small_config(*overrides: str):
    return compose_train_config([*SMALL, *overrides])
