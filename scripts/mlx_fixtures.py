#!/usr/bin/env python3
"""Generate the MLX affine quantization fixtures that stereoscope's Rust implementation must
match bit for bit: for each bit width (2, 3, 4, 5, 6, 8) and group size (32, 64, 128), a
small BF16 matrix, mx.quantize's packed words, scales and biases, and mx.dequantize's values.

Usage: mlx_fixtures.py OUT_DIR   (needs `pip install "mlx[cpu]"` on Linux)
"""
import json
import sys

import mlx.core as mx
import numpy as np


def bf16_bits(a):
    """BF16 values as their 16-bit patterns (exact, no float text round trip)."""
    return np.asarray(a.astype(mx.float32)).view(np.uint32).__rshift__(16).astype(int).tolist()


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(20261125)
    for bits in (2, 3, 4, 5, 6, 8):
        for group in (32, 64, 128):
            rows, cols = 3, 256
            x = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
            x[0, :group] += 0.3  # a group far from zero
            x[1, :group] = 0.0  # an all-zero group
            x[2, group:2 * group] = -np.abs(x[2, group:2 * group])  # a negative-only group
            w = mx.array(x).astype(mx.bfloat16)
            q, s, b = mx.quantize(w, group_size=group, bits=bits)
            d = mx.dequantize(q, s, b, group_size=group, bits=bits)
            fixture = {
                "bits": bits,
                "group_size": group,
                "shape": [rows, cols],
                "w_bf16": bf16_bits(w),
                "words": np.asarray(q).astype(np.uint64).tolist(),
                "scales_bf16": bf16_bits(s),
                "biases_bf16": bf16_bits(b),
                "dequantized_bf16": bf16_bits(d),
                "mlx_version": mx.__version__,
            }
            with open(f"{out}/b{bits}_g{group}.json", "w") as f:
                json.dump(fixture, f, separators=(",", ":"))
    print("wrote fixtures to", out)


if __name__ == "__main__":
    main()
