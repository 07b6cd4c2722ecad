#!/usr/bin/env python3
"""Hugging Face transformers as a peer on the GPU: the same prompt token ids, the same weights.

usage: hf_peer.py MODEL_DIR LOGPROBS_DIR [--device cuda] [--dtype bfloat16|float32]

MODEL_DIR is a Hugging Face folder (for example from `stereoscope convert`); LOGPROBS_DIR is
what `stereoscope logprobs --model MODEL_DIR --out LOGPROBS_DIR` wrote (prompts.json with the
token ids, bf16.f32 with stereoscope's answer-position log-probabilities). Prints the peer's
prompt tokens per second, one prompt at a time (the first prompts warm up and are not
timed), and how often its most probable next token equals stereoscope's BF16 one, with the
max |Δ log p| over the whole vocabulary.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("logprobs")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()
    ids = json.load(open(os.path.join(a.logprobs, "prompts.json")))["ids"]
    ours = np.fromfile(os.path.join(a.logprobs, "bf16.f32"), dtype="<f4").reshape(len(ids), -1)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=getattr(torch, a.dtype)).to(a.device).eval()
    warm = min(3, len(ids))
    same, max_d, tokens, secs = 0, 0.0, 0, 0.0
    with torch.no_grad():
        for k, p in enumerate(ids):
            x = torch.tensor([p], device=a.device)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            logits = model(x).logits[0, -1].float()
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if k >= warm:
                tokens += len(p)
                secs += dt
            lp = torch.log_softmax(logits, -1).cpu().numpy()
            n = min(lp.shape[0], ours.shape[1])
            same += int(np.argmax(lp[:n]) == np.argmax(ours[k][:n]))
            max_d = max(max_d, float(np.abs(lp[:n] - ours[k][:n]).max()))
    print(f"transformers {torch.__version__} {a.dtype} on {a.device}: {len(ids) - warm} prompts, "
          f"{tokens / secs:.0f} prompt tok/s one prompt at a time")
    print(f"same most probable token as stereoscope bf16: {same}/{len(ids)}; max |Δ log p| {max_d:.4f}")


if __name__ == "__main__":
    main()
