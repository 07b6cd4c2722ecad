#!/usr/bin/env python3
"""Hugging Face transformers as a speed peer on the GPU, on the same token ids and weights.

usage: hf_bench.py MODEL_DIR PROMPTS_JSON [--batch-sizes 1,8,32,64] [--generate N] [--json OUT]

MODEL_DIR is a Hugging Face folder (`stereoscope bench --synthetic SHAPE --save-model DIR`
writes one with the weights stereoscope scored); PROMPTS_JSON the token ids it scored
(`--prompts-out`). For each batch size: BF16 with SDPA attention, prompts sorted by length
and left-padded, next-token logits at the last position only (what scoring needs), timed
after a warm-up batch. Then the raw forward rate on a fixed 64 × 150 batch, a BF16 matmul
ceiling timed in the same process, and the study's own method: for N prompts, 5-token
sampled generation at temperature 0.3, once per seed (5 seeds), batch 1. Prints one JSON
object per line, and with --json the same lines into OUT.
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def sync():
    torch.cuda.synchronize()


def score(model, prompts, bs, pad):
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    for k in range(0, len(order), bs):
        rows = [prompts[i] for i in order[k:k + bs]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, width - len(r):] = torch.tensor(r)
            mask[b, width - len(r):] = 1
        out = model(input_ids=ids.cuda(), attention_mask=mask.cuda(), logits_to_keep=1)
        out.logits[:, -1].float().softmax(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("prompts")
    ap.add_argument("--batch-sizes", default="1,8,32,64")
    ap.add_argument("--generate", type=int, default=20)
    ap.add_argument("--json", help="also write the printed lines to this file")
    a = ap.parse_args()
    out = open(a.json, "w") if a.json else None

    def emit(row):
        line = json.dumps(row)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    prompts = json.load(open(a.prompts))
    tokens = sum(len(p) for p in prompts)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        a.model, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    sync()
    load = time.perf_counter() - t0
    with torch.no_grad():
        for bs in [int(x) for x in a.batch_sizes.split(",")]:
            torch.cuda.reset_peak_memory_stats()
            score(model, prompts[:bs], bs, 0)
            sync()
            t0 = time.perf_counter()
            score(model, prompts, bs, 0)
            sync()
            dt = time.perf_counter() - t0
            emit({"engine": f"transformers {torch.__version__} bf16 sdpa", "batch": bs,
                  "prompts": len(prompts), "prompts_s": len(prompts) / dt,
                  "prompt_tok_s": tokens / dt, "load_s": load,
                  "peak_gb": torch.cuda.max_memory_allocated() / 1e9})
        x = torch.randint(0, 1000, (64, 150)).cuda()
        model(input_ids=x, logits_to_keep=1)
        sync()
        t0 = time.perf_counter()
        for _ in range(5):
            model(input_ids=x, logits_to_keep=1)
        sync()
        dt = (time.perf_counter() - t0) / 5
        emit({"engine": "transformers raw forward", "batch": 64, "seq": 150,
              "tok_s": 64 * 150 / dt})
        m = torch.ones((8192, 8192), dtype=torch.bfloat16, device="cuda")
        m @ m
        sync()
        t0 = time.perf_counter()
        for _ in range(20):
            m @ m
        sync()
        emit({"engine": "torch bf16 matmul 8192^3",
              "tflops": 2 * 8192 ** 3 * 20 / (time.perf_counter() - t0) / 1e12})
        n = min(a.generate, len(prompts))
        t0 = time.perf_counter()
        for p in prompts[:n]:
            for seed in (42, 123, 456, 789, 1024):
                torch.manual_seed(seed)
                model.generate(torch.tensor([p]).cuda(), max_new_tokens=5, do_sample=True,
                               temperature=0.3, top_p=1.0, top_k=0, pad_token_id=0)
        sync()
        dt = time.perf_counter() - t0
        emit({"engine": "study method (generate per seed, batch 1)",
              "prompts": n, "records_s": 5 * n / dt})


if __name__ == "__main__":
    main()
