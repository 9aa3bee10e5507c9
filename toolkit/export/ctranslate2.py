"""Export a trained Transformer checkpoint to a CTranslate2 model directory.

Built on the ``ctranslate2`` package's own converter and model-spec API, so the directory is
what ``ctranslate2.Translator`` loads. The sentencepiece models travel with it
(``source.spm``, ``target.spm``), so the directory alone serves raw text::

    toolkit-export-ct2 checkpoints/checkpoint_best.pt ct2-model [--quantization int8]
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from toolkit.data.dictionary import PAD
from toolkit.data.tokenizer import SentencePieceTokenizer
from toolkit.files import atomic_write_with
from toolkit.models.layers import DecoderLayer, EncoderLayer, TokenEmbedding
from toolkit.models.transformer import TransformerModel

logger = logging.getLogger(__name__)

try:
    from ctranslate2.converters.converter import Converter
    from ctranslate2.specs import common_spec, transformer_spec
except ImportError as error:  # an optional dependency: pip install 'toolkit[export]'
    raise ImportError("exporting to CTranslate2 needs the ctranslate2 package: "
                      "pip install 'toolkit[export]' (or ctranslate2)") from error

_ACTIVATIONS = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU}


class ToolkitConverter(Converter):
    """Converts a ``transformer`` model, its vocabularies and its special tokens."""

    def __init__(self, model: TransformerModel, src_symbols: list[str], tgt_symbols: list[str]):
        self.model, self.src_symbols, self.tgt_symbols = model, src_symbols, tgt_symbols

    def _load(self) -> transformer_spec.TransformerSpec:
        model, cfg = self.model, self.model.cfg
        _check_supported(model)
        spec = transformer_spec.TransformerSpec.from_config(  # the depth the model has now (pruned at load?)
            (len(model.encoder.layers), len(model.decoder.layers)), cfg.encoder_attention_heads,
            pre_norm=cfg.normalize_before, activation=_ACTIVATIONS[cfg.activation_fn])
        with torch.no_grad():
            _set_input(spec.encoder, model.encoder.embedding, index=0)
            for layer_spec, layer in zip(spec.encoder.layer, model.encoder.layers, strict=True):
                _set_encoder_layer(layer_spec, layer)
            _set_input(spec.decoder, model.decoder.embedding)
            for layer_spec, layer in zip(spec.decoder.layer, model.decoder.layers, strict=True):
                _set_decoder_layer(layer_spec, layer)
            if cfg.normalize_before:  # post-norm models have no final norm
                _set_norm(spec.encoder.layer_norm, model.encoder.final_norm)
                _set_norm(spec.decoder.layer_norm, model.decoder.final_norm)
            _set_linear(spec.decoder.projection, model.decoder.output_projection)
        spec.register_source_vocabulary(_vocabulary(self.src_symbols))
        spec.register_target_vocabulary(_vocabulary(self.tgt_symbols))
        spec.config.add_source_eos = True  # sources end in </s>; targets start from <s>
        spec.config.decoder_start_token = spec.config.bos_token
        spec.config.layer_norm_epsilon = 1e-5
        return spec


def export_checkpoint(path: str | Path, output_dir: str | Path, quantization: str | None = None,
                      force: bool = False, plugin_options: dict | None = None) -> Path:
    """Write the CTranslate2 model of checkpoint ``path`` (and its sentencepiece models) to ``output_dir``.

    :param plugin_options: merged over the checkpoint's plugin options before the model is
        rebuilt (e.g. a depth to prune to), as ``toolkit-generate``'s ``plugin_options``.
    """
    from toolkit.inference import load_for_inference

    _, task, model, _ = load_for_inference(path, device="cpu", plugin_options=plugin_options)
    if not isinstance(model, TransformerModel):
        raise ValueError(f"only transformer models export to CTranslate2, not {type(model).__name__}")
    converter = ToolkitConverter(model, task.src_dict.symbols, task.tgt_dict.symbols)
    output = Path(converter.convert(str(output_dir), quantization=quantization, force=force))
    for side, tokenizer in (("source", task.src_tokenizer), ("target", task.tgt_tokenizer)):
        if isinstance(tokenizer, SentencePieceTokenizer):
            atomic_write_with(output / f"{side}.spm", lambda f: f.write(tokenizer.model_proto))
    logger.info("exported %s to %s (%s weights)", path, output, quantization or "float32")
    return output


def source_pieces(task, lines: list[str]) -> list[list[str]]:
    """Source lines as the pieces an exported model takes (CTranslate2 adds the </s>)."""
    return [task.src_dict.symbols_of(ids, strip_specials=False) for ids in task.src_tokenizer.encode(lines)]


def detokenize(task, pieces: list[str]) -> str:
    """An exported model's output pieces as text."""
    return task.tgt_tokenizer.decode(task.tgt_dict.encode_tokens(pieces))


def _check_supported(model: TransformerModel) -> None:
    cfg = model.cfg
    problems = []
    if cfg.activation_fn not in _ACTIVATIONS:
        problems.append(f"activation {cfg.activation_fn!r}")
    if cfg.encoder_attention_heads != cfg.decoder_attention_heads:
        problems.append("different encoder and decoder head counts")
    if not cfg.scale_embedding:
        problems.append("unscaled embeddings")
    if problems:
        raise ValueError("CTranslate2 cannot represent this model: " + ", ".join(problems))


def _vocabulary(symbols: list[str]) -> list[str]:
    return ["<blank>" if symbol == PAD else symbol for symbol in symbols]  # CT2's padding token


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _set_linear(spec, linear: torch.nn.Linear) -> None:
    spec.weight = _array(linear.weight)
    if linear.bias is not None:
        spec.bias = _array(linear.bias)


def _set_norm(spec, norm: torch.nn.LayerNorm) -> None:
    spec.gamma, spec.beta = _array(norm.weight), _array(norm.bias)


def _set_input(spec, embedding: TokenEmbedding, index: int | None = None) -> None:
    target = spec.embeddings[index] if index is not None else spec.embeddings
    target.weight = _array(embedding.embed_tokens.weight)
    spec.scale_embeddings = True
    spec.position_encodings.encodings = _array(embedding.positions.table)  # (P, C), position 0 first


def _set_attention(spec, attention, norm: torch.nn.LayerNorm) -> None:
    if attention.self_attention:  # fused [q; k; v]: the layout CT2 expects
        _set_linear(spec.linear[0], attention.qkv_proj)
    else:  # q, then fused [k; v]
        _set_linear(spec.linear[0], attention.q_proj)
        _set_linear(spec.linear[1], attention.kv_proj)
    _set_linear(spec.linear[-1], attention.out_proj)
    _set_norm(spec.layer_norm, norm)


def _set_ffn(spec, layer: EncoderLayer | DecoderLayer) -> None:
    _set_linear(spec.linear_0, layer.ffn.fc1)
    _set_linear(spec.linear_1, layer.ffn.fc2)
    _set_norm(spec.layer_norm, layer.ffn_block.norm)


def _set_encoder_layer(spec, layer: EncoderLayer) -> None:
    _set_attention(spec.self_attention, layer.self_attn, layer.attn_block.norm)
    _set_ffn(spec.ffn, layer)


def _set_decoder_layer(spec, layer: DecoderLayer) -> None:
    _set_attention(spec.self_attention, layer.self_attn, layer.self_attn_block.norm)
    _set_attention(spec.attention, layer.cross_attn, layer.cross_attn_block.norm)
    _set_ffn(spec.ffn, layer)
