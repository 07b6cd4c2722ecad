#!/usr/bin/env python3
"""Next-token logits of a model folder computed by mlx-lm, the reference for MLX numerics.

usage: mlx_logits.py MODEL_DIR TOKEN_IDS OUT.json [--dtype float32|bfloat16] [--dense]

TOKEN_IDS is a comma-separated list, or several separated by `;` (one sequence each). Loads the folder with mlx-lm's own loader (so an MLX
folder's packed weights, per-module quantization and the architecture's rotary scaling are
mlx-lm's), casts floating parameters to --dtype, runs the tokens as one sequence and writes
{"logits": [[...] per position]} as float32 values ({"logits": [...]} per sequence when
several). With --dense, quantized layers are replaced by dense ones holding mx.dequantize's
BF16 output (stereoscope's `--scheme mlx` weights) before the cast.
"""
import argparse
import json
from pathlib import Path

import mlx.core as mx
from mlx_lm.utils import load_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("tokens")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--dense", action="store_true")
    a = ap.parse_args()
    model, _ = load_model(Path(a.model))
    if a.dense:
        dense_from_quantized(model)
    model.set_dtype(getattr(mx, a.dtype))
    out = []
    for seq in a.tokens.split(";"):
        ids = [int(t) for t in seq.split(",")]
        logits = model(mx.array([ids])).astype(mx.float32)
        mx.eval(logits)
        out.append(logits[0].tolist())
    result = {"logits": out[0]} if len(out) == 1 else {"sequences": out}
    Path(a.out).write_text(json.dumps(result))


def dense_from_quantized(model):
    """Replace quantized layers by dense ones holding mx.dequantize's BF16 weights."""
    import mlx.nn as nn
    from mlx.utils import tree_unflatten
    swaps = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            w = mx.dequantize(m.weight, m.scales, m.biases, group_size=m.group_size, bits=m.bits)
            if isinstance(m, nn.QuantizedEmbedding):
                d = nn.Embedding(w.shape[0], w.shape[1])
            else:
                d = nn.Linear(w.shape[1], w.shape[0], bias="bias" in m)
                if "bias" in m:
                    d.bias = m.bias
            d.weight = w
            swaps.append((name, d))
    model.update_modules(tree_unflatten(swaps))


if __name__ == "__main__":
    main()
