#!/usr/bin/env python3
"""Next-token logits of a model folder computed by mlx-lm, the reference for MLX numerics.

usage: mlx_logits.py MODEL_DIR TOKEN_IDS OUT.json [--dtype float32|bfloat16]

TOKEN_IDS is a comma-separated list. Loads the folder with mlx-lm's own loader (so an MLX
folder's packed weights, per-module quantization and the architecture's rotary scaling are
mlx-lm's), casts floating parameters to --dtype, runs the tokens as one sequence and writes
{"logits": [[...] per position]} as float32 values.
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
    a = ap.parse_args()
    model, _ = load_model(Path(a.model))
    model.set_dtype(getattr(mx, a.dtype))
    ids = [int(t) for t in a.tokens.split(",")]
    logits = model(mx.array([ids])).astype(mx.float32)
    mx.eval(logits)
    Path(a.out).write_text(json.dumps({"logits": logits[0].tolist()}))


if __name__ == "__main__":
    main()
