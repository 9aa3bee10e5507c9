"""``toolkit-export-ct2 CHECKPOINT OUTPUT_DIR``: a CTranslate2 model directory for deployment."""

from __future__ import annotations

import argparse
import logging
import sys

QUANTIZATIONS = ["int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16",
                 "float32"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="toolkit-export-ct2", description=__doc__)
    parser.add_argument("checkpoint", help="a toolkit checkpoint (.pt) of a transformer model")
    parser.add_argument("output_dir", help="the CTranslate2 model directory to write")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default=None,
                        help="weight type of the exported model (default: float32)")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    parser.add_argument("--plugin-option", action="append", default=[], metavar="PLUGIN.KEY=VALUE",
                        help="merged over the checkpoint's plugin options before export, e.g. "
                             "my_pruner.decoder_layers_to_keep=[0,2] (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from toolkit.cli import reporting_errors

    # ctranslate2 missing (ImportError), a model it cannot represent (ValueError), its converter's
    # refusals such as an existing output folder (RuntimeError): one line, as for user errors
    with reporting_errors(parser.prog, also=(ImportError, ValueError, RuntimeError)):
        from toolkit.config import parse_plugin_options
        from toolkit.export.ctranslate2 import export_checkpoint

        output = export_checkpoint(args.checkpoint, args.output_dir, args.quantization, args.force,
                                   parse_plugin_options(args.plugin_option))
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
