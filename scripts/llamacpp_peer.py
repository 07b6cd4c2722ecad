#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) scoring the given prompt token ids from a GGUF file.

Usage: llamacpp_peer.py MODEL.gguf PROMPTS.json THREADS PART_SIZE
Prints JSON rows: full prompts (cache cleared per prompt) and prompts after a shared prefix
(the KV cache of the common prefix with the previous prompt kept, reset every PART_SIZE
prompts, as stereoscope does).
"""
import json
import sys
import time

from llama_cpp import Llama


def main():
    model, prompts_file, threads, part = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    prompts = json.load(open(prompts_file))
    t0 = time.perf_counter()
    llm = Llama(model_path=model, n_ctx=2048, n_batch=512, n_threads=threads,
                n_threads_batch=threads, logits_all=False, verbose=False)
    load = time.perf_counter() - t0
    rows = []
    total = sum(len(p) for p in prompts)
    # Full prompts.
    t0 = time.perf_counter()
    for p in prompts:
        llm.reset()
        llm.eval(p)
    rows.append(dict(engine=f"llama.cpp {threads}t (full prompts)", precision="gguf file",
                     prompt_tokens=total, computed_tokens=total, load_secs=load,
                     secs=time.perf_counter() - t0))
    # Shared-prefix reuse.
    computed = 0
    t0 = time.perf_counter()
    prev = []
    for i, p in enumerate(prompts):
        if i % part == 0:
            llm.reset()
            prev = []
        lcp = 0
        while lcp < min(len(prev), len(p)) - 0 and prev[lcp] == p[lcp]:
            lcp += 1
        lcp = min(lcp, len(p) - 1)
        llm.n_tokens = lcp
        llm.eval(p[lcp:])
        computed += len(p) - lcp
        prev = p
    rows.append(dict(engine=f"llama.cpp {threads}t (prefix reuse)", precision="gguf file",
                     prompt_tokens=total, computed_tokens=computed, load_secs=load,
                     secs=time.perf_counter() - t0))
    json.dump(rows, sys.stdout)


if __name__ == "__main__":
    main()
