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

Usage: parity.py STEREOSCOPE_BINARY MODEL_DIR BBQ_DIR [N] [--markdown] [--mlx-dtype=float32|bfloat16]
                 [--mlx-weights=quantized|dequantized-bf16]
Needs: pip install "mlx[cpu]" mlx-lm numpy
"""
import json
import os
import subprocess
import sys
import tempfile

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


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    markdown = "--markdown" in sys.argv
    dtype = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--mlx-dtype=")), "float32")
    weights = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--mlx-weights=")), "quantized")
    binary, model_dir, bbq = args[0], args[1], args[2]
    n = int(args[3]) if len(args) > 3 else 200
    work = tempfile.mkdtemp(prefix="stereoscope-parity-")
    dump = os.path.join(work, "stereoscope")
    subprocess.run([binary, "logprobs", "--model", model_dir, "--bbq-dir", bbq, "--categories", "Age,Religion",
                    "--limit", str(n), "--scheme", "mlx", "--out", dump], check=True)
    prompts = json.load(open(os.path.join(dump, "prompts.json")))
    ids, texts = prompts["ids"], prompts["texts"]
    letters = json.load(open(os.path.join(dump, "letters.json")))
    rows = []
    same_ids = None
    for prec, bits in PRECISIONS.items():
        path = model_dir
        if bits is not None:
            path = os.path.join(work, f"mlx-{prec}")
            convert(model_dir, mlx_path=path, quantize=True, q_group_size=64, q_bits=bits)
        model, tok = load(path)
        if weights == "dequantized-bf16":
            dense_from_quantized(model)
        model.set_dtype(getattr(mx, dtype))
        if same_ids is None:
            same_ids = sum(tok.encode(t, add_special_tokens=False) == i for t, i in zip(texts, ids)) / len(ids)
        ours = np.fromfile(os.path.join(dump, f"{prec}.f32"), dtype="<f4").reshape(len(ids), -1)
        diffs, letter_diffs, argmax_same, rank_same = [], [], 0, 0
        for k, p in enumerate(ids):
            logits = last_logits(model, p)
            theirs = np.array(logits - mx.logsumexp(logits))
            d = np.abs(theirs - ours[k][: theirs.shape[0]])
            diffs.append(d)
            lt = [j for group in letters for j in group]
            letter_diffs.append(d[lt])
            argmax_same += int(np.argmax(theirs) == np.argmax(ours[k]))
            mass = lambda lp: [np.exp(lp[g]).sum() for g in letters]
            rank_same += int(list(np.argsort(mass(theirs))) == list(np.argsort(mass(ours[k]))))
        all_d = np.concatenate(diffs)
        let_d = np.concatenate(letter_diffs)
        rows.append((prec, len(ids), all_d.max(), np.median(all_d), let_d.max(), np.median(let_d),
                     argmax_same / len(ids), rank_same / len(ids)))
        print(f"done {prec}: {rows[-1]}", file=sys.stderr, flush=True)
    head = ("precision", "prompts", "max |Δ| all", "median |Δ| all", "max |Δ| letters", "median |Δ| letters",
            "same argmax", "same A/B/C rank")
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]:.5f} | {r[4]:.4f} | {r[5]:.5f} | {100*r[6]:.1f}% | {100*r[7]:.1f}% |")
    else:
        for r in rows:
            print(r)
    print(f"\nmlx-lm dtype: {dtype}; weights: {weights}; mlx {mx.__version__}")
    print(f"prompt token ids identical between stereoscope and mlx-lm's tokenizer: {100*same_ids:.1f}%")


if __name__ == "__main__":
    main()
