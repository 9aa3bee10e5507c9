r"""toolkit-quantize: write a quantized copy of a trained model.

    toolkit-quantize CKPT OUT --scheme int8          # int8 weights, integer kernels on the CPU
    toolkit-quantize CKPT OUT --scheme ipq --block-size 8 --centroids 256
    toolkit-quantize CKPT OUT --scheme ipq --centroids 256 --embedding-centroids 2048   # a larger codebook for the tables
    toolkit-quantize CKPT OUT --scheme ipq+int8      # iPQ for embeddings and feed-forward, int8 elsewhere
    toolkit-quantize CKPT OUT --scheme ipq --finetune-updates 300   # iterative: fine-tune between stages

iPQ is iterative: feed-forward matrices, then attention, then embeddings are quantized, and
with ``--finetune-updates N`` each stage is followed by N updates of the core's trainer on the
checkpoint's own training data (``--finetune-lr``, fixed): the centroids (gradients averaged
over their sub-vectors) and the weights not yet quantized learn to make up for the error.

The output is an inference checkpoint (``toolkit.checkpoint.save_inference_checkpoint``) whose
config records the layout, so ``toolkit-generate``, ``Translator.from_checkpoint`` and
``scripts/benchmark_generate.py`` load it (with this plugin installed); it loads with
``torch.load(weights_only=True)``. Every check (scheme, block sizes, centroids, an input that
is quantized already) runs before any work, and the file is written atomically.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from toolkit.checkpoint import load_checked, save_inference_checkpoint
from toolkit.errors import ConfigError
from toolkit.files import check_output_path
from toolkit.inference import load_for_inference
from toolkit.plugins import get_plugins

from quant_noise.finetune import quantize_in_stages
from quant_noise.layout import SCHEMES, plan
from quant_noise.options import QuantNoiseOptions

NAME = "quant_noise"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="toolkit-quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--scheme", required=True, choices=SCHEMES)
    parser.add_argument("--block-size", type=int, default=8, help="iPQ sub-vector size of Linear weights")
    parser.add_argument("--embedding-block-size", type=int, default=8, help="iPQ sub-vector size of embeddings")
    parser.add_argument("--centroids", type=int, default=256, help="iPQ centroids per matrix")
    parser.add_argument("--embedding-centroids", type=int,
                        help="iPQ centroids of the embedding tables and the output layer (default: --centroids)")
    parser.add_argument("--keep-float", default="", help="comma-separated: embeddings, output")
    parser.add_argument("--finetune-updates", type=int, default=0, help="updates of fine-tuning after each stage")
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--workdir", type=Path, help="fine-tuning runs go here (default: a temporary folder)")
    parser.add_argument("--threads", type=int)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from toolkit.cli import reporting_errors

    with reporting_errors("toolkit-quantize"):
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        quantize(args)
    return 0


def quantize(args: argparse.Namespace) -> int:
    """Load, plan and check, quantize, write; returns the output's bytes."""
    if args.finetune_updates < 0:
        raise ConfigError(f"--finetune-updates must be >= 0, got {args.finetune_updates}")
    check_output_path(args.output, args.checkpoint)
    plugins = get_plugins()
    state = load_checked(args.checkpoint, plugins, for_inference=True)
    options = (state["cfg"].get("plugins") or {}).get("options", {}).get(NAME) or {}
    if options.get("quantized"):
        raise ConfigError(f"{args.checkpoint} is quantized already ({len(options['quantized'])} modules): "
                          f"quantize the float checkpoint it came from")
    cfg, task, model, state = load_for_inference(args.checkpoint, plugins, device="cpu", state=state)
    float_bytes = weight_bytes(model)
    keep_float = tuple(part for part in args.keep_float.split(",") if part)
    layout = plan(model, args.scheme, args.block_size, args.centroids, args.embedding_block_size, keep_float,
                  args.embedding_centroids)
    if NAME not in cfg.plugins.options:
        cfg.plugins.options[NAME] = OmegaConf.structured(QuantNoiseOptions())
    with tempfile.TemporaryDirectory() as tmp:
        model = quantize_in_stages(cfg, task, model, plugins, layout, args.finetune_updates, args.finetune_lr,
                                   args.workdir or Path(tmp))
    cfg.plugins.options[NAME].quantized = layout
    size = save_inference_checkpoint(args.output, cfg, task, model, plugins, roles={NAME: "model"},
                                     quantized_from={"checkpoint": str(args.checkpoint), "scheme": args.scheme,
                                                     "finetune_updates_per_stage": args.finetune_updates},
                                     num_updates=state.get("num_updates"))
    original = os.path.getsize(args.checkpoint)
    print(f"{args.scheme}: {len(layout)} modules quantized; {size:,} bytes, {size / original:.3f} of the input's "
          f"{original:,} bytes ({size / float_bytes:.3f} of its {float_bytes:,} bytes of weights)")
    return size


def weight_bytes(model) -> int:
    """Bytes of the model's stored tensors, each shared tensor (tied embeddings) counted once."""
    return tensor_bytes(model.state_dict().values())


def tensor_bytes(tensors) -> int:
    """Bytes of ``tensors``, each storage (a tied weight) counted once."""
    unique = {t.data_ptr(): t.numel() * t.element_size() for t in tensors}
    return sum(unique.values())


if __name__ == "__main__":
    sys.exit(main())
