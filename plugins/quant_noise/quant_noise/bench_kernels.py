r"""The int8 kernels against float32 on a decoder's products: ``python -m quant_noise.bench_kernels``

    python -m quant_noise.bench_kernels --threads 2 [--rows 320 --width 256 --ffn 1024 --vocab 8000]

For each product of a ``transformer_small`` decoding step at beam 5 x batch 64 (320 rows): the
fused QKV projection, the feed-forward pair and the output projection, it times float32
``F.linear`` and ``torch.ops.quantized.linear_dynamic`` with weights packed by every quantized
engine this PyTorch has (7- and 8-bit activations), best of 5 runs of 20 calls, and prints ms and
the relative error against float32. ``Int8Linear`` packs with ``int8.kernel_engine()``.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
import torch.nn.functional as F

from quant_noise.int8 import kernel_engine, pack_weight, quantize_rows


def best_ms(run: Callable[[], object], calls: int = 20, repeats: int = 5) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        times.append((time.perf_counter() - start) / calls)
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    engines = [e for e in ("fbgemm", "onednn") if e in torch.backends.quantized.supported_engines]
    print(f"{torch.get_num_threads()} threads; Int8Linear packs with {kernel_engine()[0]!r}\n")
    print("| product (rows x in -> out) | float32 ms | " + " | ".join(f"{e} 7-bit | {e} 8-bit" for e in engines) + " |")
    print("|---|---|" + "---|---|" * len(engines))
    torch.manual_seed(0)
    for name, k, n in (("QKV", args.width, 3 * args.width), ("FFN in", args.width, args.ffn),
                       ("FFN out", args.ffn, args.width), ("output projection", args.width, args.vocab)):
        x, w, b = torch.randn(args.rows, k), torch.randn(n, k) * k**-0.5, torch.zeros(n)
        reference = F.linear(x, w, b)
        cells = [f"{best_ms(lambda: F.linear(x, w, b)):.2f}"]
        for engine in engines:
            weights = pack_weight(*quantize_rows(w), b, engine)
            for reduce_range in (True, False):
                out = torch.ops.quantized.linear_dynamic(x, weights, reduce_range)
                error = ((out - reference).norm() / reference.norm()).item()
                ms = best_ms(lambda: torch.ops.quantized.linear_dynamic(x, weights, reduce_range))
                cells.append(f"{ms:.2f} (error {error:.1%})")
        print(f"| {name} ({args.rows} x {k} -> {n}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
