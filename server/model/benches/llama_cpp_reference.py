#!/usr/bin/env python3
"""llama.cpp reference for the embedded-model benchmark (see BENCHMARKS.md).

Runs the same GGUF, prompt and thread count as `cargo bench -p cairn-model --bench
embedded` through llama-cpp-python and prints one JSON object: load time, prompt and
decode tokens/s (greedy, end-of-sequence ignored), peak RSS.

    $CAIRN_CACHE/llama-venv/bin/python server/model/benches/llama_cpp_reference.py \
        --threads 1 [--gguf PATH] [--prompt server/model/benches/embedded_prompt.txt]

With --tokenize, prints llama.cpp's token ids for each argument instead (used to
check the Rust tokenizer against llama.cpp by hand).
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_GGUF = os.path.join(
    os.environ.get("CAIRN_MODEL_DIR", os.path.expanduser("~/.cache/cairn/models")),
    "SmolLM2-135M-Instruct.Q4_1.gguf",
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--prompt", default=os.path.join(HERE, "embedded_prompt.txt"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokenize", nargs="*")
    args = ap.parse_args()

    t0 = time.perf_counter()
    llm = Llama(
        model_path=args.gguf,
        n_ctx=2048,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        # n_ubatch: the prompt goes through the model 256 tokens at a time, as the
        # embedded provider's prefill does (PREFILL_CHUNK in src/embedded/session.rs).
        # n_batch only sizes llama-cpp-python's logits buffer, indexed by position below:
        # it must hold the prompt plus the new tokens.
        n_batch=1024,
        n_ubatch=256,
        verbose=False,
    )
    load_s = time.perf_counter() - t0

    if args.tokenize is not None:
        out = {t: llm.tokenize(t.encode(), add_bos=False, special=True) for t in args.tokenize}
        print(json.dumps(out))
        return

    text = open(args.prompt, encoding="utf-8").read()
    tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
    prompt_runs, decode_runs = [], []
    for _ in range(args.runs):
        llm.reset()
        llm._ctx.kv_cache_clear()
        t0 = time.perf_counter()
        llm.eval(tokens)
        prompt_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(args.new_tokens):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([nxt])
        decode_runs.append(time.perf_counter() - t0)
    prompt_s = sorted(prompt_runs)[len(prompt_runs) // 2]
    decode_s = sorted(decode_runs)[len(decode_runs) // 2]
    print(
        json.dumps(
            {
                "engine": "llama.cpp (llama-cpp-python)",
                "threads": args.threads,
                "load_ms": round(load_s * 1000, 1),
                "prompt_tokens": len(tokens),
                "prompt_tok_s": round(len(tokens) / prompt_s, 1),
                "new_tokens": args.new_tokens,
                "decode_tok_s": round(args.new_tokens / decode_s, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
