#!/usr/bin/env python3
"""Logit parity between stereoscope and mlx-lm on the study's prompts.

For a Hugging Face folder (for example one written by `stereoscope convert`), N ambiguous
BBQ prompts and each precision (bf16 as loaded; q8/q6/q4/q3 made by mlx_lm.convert with
group size 64, and by stereoscope's `--scheme mlx` from the same BF16 weights), it prints the
max and median absolute difference of the answer-position log-probabilities (over the whole
vocabulary and over the letter tokens), and the share of prompts where both pick the same
most probable token and rank A/B/C the same.

mlx-lm runs its model in float32 by default (`--mlx-dtype bfloat16` for its BF16
activations): the weights, quantized ones included, are the same either way (BF16 scales and
biases are exact in float32), and MLX's BF16 kernels are very slow on a CPU.

With `--mlx-weights=dequantized-bf16`, mlx-lm's quantized layers are replaced by dense layers
holding `mx.dequantize`'s BF16 output (what MLX's BF16 kernels multiply with), computed in
float32: this isolates the quantized weights from activation precision.

With `--mlx-device=gpu`, mlx-lm's forward passes run on MLX's GPU backend (Metal, or CUDA with
`pip install "mlx[cuda13]"`); quantization and dequantization still run on MLX's CPU, whose
results the test suite checks bit for bit. `--stereoscope-device` is passed to
`stereoscope logprobs --device` (cpu, cuda, metal).

`--mlx-dtype` and `--mlx-weights` take comma lists; every combination gets its own table from
the same stereoscope run.

Usage: parity.py STEREOSCOPE_BINARY MODEL_DIR BBQ_DIR [N] [--markdown] [--mlx-dtype=float32,bfloat16]
                 [--mlx-weights=quantized,dequantized-bf16] [--mlx-device=cpu|gpu]
                 [--stereoscope-device=cpu|cuda|metal] [--precisions=bf16,q8,q6,q4,q3]
Needs: pip install "mlx[cpu]" mlx-lm numpy
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import mlx.core as mx
import numpy as np
from mlx_lm import convert, load

from mlx_logits import dense_from_quantized

PRECISIONS = {"bf16": None, "q8": 8, "q6": 6, "q4": 4, "q3": 3}


def last_logits(model, ids):
    """Next-token logits at the last position only (the output layer is the costliest part
    of a small model's forward over all positions)."""
    h = model.model(mx.array([ids]))[:, -1:, :]
    if getattr(model, "lm_head", None) is not None:
        out = model.lm_head(h)
    else:
        out = model.model.embed_tokens.as_linear(h)
    return out[0, -1].astype(mx.float32)


def parse_args():
    ap = argparse.ArgumentParser(description="Answer-position log-prob parity between stereoscope and mlx-lm")
    ap.add_argument("binary", help="the stereoscope binary")
    ap.add_argument("model", help="a BF16 Hugging Face folder")
    ap.add_argument("bbq", help="the BBQ folder")
    ap.add_argument("n", nargs="?", type=int, default=200, help="prompts (default 200)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--mlx-dtype", default="float32", help="comma list of float32, bfloat16")
    ap.add_argument("--mlx-weights", default="quantized", help="comma list of quantized, dequantized-bf16")
    ap.add_argument("--mlx-device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--stereoscope-device", default="cpu")
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    a = ap.parse_args()
    a.precisions = [p for p in a.precisions.split(",") if p]
    bad = [p for p in a.precisions if p not in PRECISIONS]
    a.setups = [(d, w) for d in a.mlx_dtype.split(",") for w in a.mlx_weights.split(",")]
    bad += [d for d, _ in a.setups if d not in ("float32", "bfloat16")]
    bad += [w for _, w in a.setups if w not in ("quantized", "dequantized-bf16")]
    if bad:
        ap.error(f"unknown value(s) {bad}")
    return a


def compare(model, ids, ours, letters):
    """One precision and one mlx-lm setup: the table row and the prompts whose argmax differs."""
    flat = [j for group in letters for j in group]
    diffs, letter_diffs, argmax_same, rank_same, differing = [], [], 0, 0, []
    mass = lambda lp: [np.exp(lp[g]).sum() for g in letters]
    for k, p in enumerate(ids):
        logits = last_logits(model, p)
        theirs = np.array(logits - mx.logsumexp(logits))
        d = np.abs(theirs - ours[k][: theirs.shape[0]])
        diffs.append(d)
        letter_diffs.append(d[flat])
        if np.argmax(theirs) == np.argmax(ours[k]):
            argmax_same += 1
        else:
            differing.append(k)
        rank_same += int(list(np.argsort(mass(theirs))) == list(np.argsort(mass(ours[k]))))
    all_d, let_d = np.concatenate(diffs), np.concatenate(letter_diffs)
    return (len(ids), all_d.max(), np.median(all_d), let_d.max(), np.median(let_d),
            argmax_same / len(ids), rank_same / len(ids)), differing


def main():
    a = parse_args()
    t0 = time.time()
    work = tempfile.mkdtemp(prefix="stereoscope-parity-")
    dump = os.path.join(work, "stereoscope")
    subprocess.run([a.binary, "logprobs", "--model", a.model, "--bbq-dir", a.bbq, "--categories", "Age,Religion",
                    "--limit", str(a.n), "--precisions", ",".join(a.precisions), "--scheme", "mlx",
                    "--device", a.stereoscope_device, "--out", dump], check=True)
    print(f"stereoscope logprobs took {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    prompts = json.load(open(os.path.join(dump, "prompts.json")))
    ids, texts = prompts["ids"], prompts["texts"]
    letters = json.load(open(os.path.join(dump, "letters.json")))
    rows = {setup: [] for setup in a.setups}
    same_ids = None
    for prec in a.precisions:
        bits = PRECISIONS[prec]
        mx.set_default_device(mx.cpu)
        path = a.model
        if bits is not None:
            path = os.path.join(work, f"mlx-{prec}")
            convert(a.model, mlx_path=path, quantize=True, q_group_size=64, q_bits=bits)
        ours = np.fromfile(os.path.join(dump, f"{prec}.f32"), dtype="<f4").reshape(len(ids), -1)
        for dtype, weights in a.setups:
            mx.set_default_device(mx.cpu)
            model, tok = load(path)
            if weights == "dequantized-bf16":
                dense_from_quantized(model)
            model.set_dtype(getattr(mx, dtype))
            mx.eval(model.parameters())
            mx.set_default_device(getattr(mx, a.mlx_device))
            if same_ids is None:
                same_ids = sum(tok.encode(t, add_special_tokens=False) == i for t, i in zip(texts, ids)) / len(ids)
            row, differing = compare(model, ids, ours, letters)
            rows[(dtype, weights)].append((prec, *row))
            print(f"[{time.time() - t0:.0f} s] done {prec} {dtype} {weights}: {rows[(dtype, weights)][-1]}; argmax differs on prompts {differing}",
                  file=sys.stderr, flush=True)
    head = ("precision", "prompts", "max |Δ| all", "median |Δ| all", "max |Δ| letters", "median |Δ| letters",
            "same argmax", "same A/B/C rank")
    for (dtype, weights), table in rows.items():
        print(f"\nmlx-lm dtype: {dtype}; weights: {weights}; device: {a.mlx_device}; mlx {mx.__version__}; "
              f"stereoscope device: {a.stereoscope_device}\n")
        if a.markdown:
            print("| " + " | ".join(head) + " |")
            print("|" + "---|" * len(head))
            for r in table:
                print(f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]:.5f} | {r[4]:.4f} | {r[5]:.5f} | "
                      f"{100*r[6]:.1f}% | {100*r[7]:.1f}% |")
        else:
            for r in table:
                print(r)
    print(f"\nprompt token ids identical between stereoscope and mlx-lm's tokenizer: {100*same_ids:.1f}%")


if __name__ == "__main__":
    main()
