"""Is evalbench's OpenVINO timing fair? Its decode speed beside a bare OpenVINO loop and ``LLMPipeline``'s own.

On one IR of the sample model (the precision's, exported and compressed by the backend), at the
same threads and inference precision, three ways to greedily decode ``--new-tokens`` tokens
after ``--prompt-tokens`` WikiText-2 tokens:

- ``harness``: the backend's ``generate``, timed by evalbench's speed measurement;
- ``bare``: a minimal loop over the same compiled model's infer request, timed here;
- ``LLMPipeline``: openvino-genai's own pipeline (stateful SDPA), its ``perf_metrics`` (1000 / TPOT).

Measured round-robin, so that a slow spell hits all three alike; the table gives medians and
each one's ratio to the bare loop (evalbench's harness should reach 0.9 or more).

    EVALBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/openvino_loop.py --precision ov_int8 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from evalbench.backends.openvino.config import OpenVinoConfig
from evalbench.backends.openvino.precision import OV_TYPES, OpenVinoPrecision
from evalbench.config import DatasetConfig
from evalbench.dataset.text import load_text
from evalbench.environment import fingerprint
from evalbench.metrics.perplexity import tokenize
from evalbench.metrics.speed import measure_speed, prompt_batch
from evalbench.model.loader import checkpoint_dir

sys.path.insert(0, str(Path(__file__).parent))
from ort_genai_speed import SAMPLE


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="ov_int8", choices=list(OV_TYPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache-dir", default=os.environ.get("EVALBENCH_CACHE_DIR", "~/.cache/evalbench"))
    return parser.parse_args()


def bare_loop(compiled, prompt: np.ndarray, new_tokens: int) -> float:
    """Decode tokens/s of a minimal greedy loop over ``compiled``'s infer request (one sequence)."""
    request = compiled.create_infer_request()
    request.reset_state()
    length = prompt.shape[1]
    inputs = {
        "input_ids": prompt,
        "attention_mask": np.ones((1, length), np.int64),
        "position_ids": np.arange(length, dtype=np.int64)[None],
        "beam_idx": np.zeros(1, np.int32),
    }
    request.infer(inputs)
    token = request.get_tensor("logits").data[:, -1].argmax(-1)
    started = time.perf_counter()
    for step in range(1, new_tokens):
        inputs["input_ids"] = token.reshape(1, 1).astype(np.int64)
        inputs["attention_mask"] = np.ones((1, length + step), np.int64)
        inputs["position_ids"] = np.array([[length + step - 1]], np.int64)
        request.infer(inputs)
        token = request.get_tensor("logits").data[:, -1].argmax(-1)
    return (new_tokens - 1) / (time.perf_counter() - started)


def pipeline_speed(pipe, genai, prompt: np.ndarray, new_tokens: int) -> float:
    """Decode tokens/s LLMPipeline reports for one greedy generation (1000 / its mean time per output token)."""
    import openvino as ov

    config = genai.GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    result = pipe.generate(ov.Tensor(prompt), config)
    return 1000.0 / result.perf_metrics.get_tpot().mean


def main() -> int:
    args = parse_args()
    import openvino_genai as genai

    cache_dir = Path(args.cache_dir).expanduser()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir(SAMPLE, cache_dir)[0])
    text = load_text(DatasetConfig(data_dir=os.environ.get("EVALBENCH_DATA_DIR")))
    prompts = prompt_batch(tokenize(text.text, tokenizer, args.prompt_tokens).ids, 1, args.prompt_tokens)
    precision = OpenVinoPrecision(args.precision)
    backend = OpenVinoConfig().build(precision, SAMPLE, cache_dir)
    backend.load(tokenizer)
    backend.set_threads(args.threads)
    backend.prepare_generation(prompts, args.new_tokens, True)
    properties = {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": precision.inference_precision}
    pipe = genai.LLMPipeline(str(backend.folder), "CPU", ATTENTION_BACKEND="SDPA", **properties)
    prompt = np.ascontiguousarray(prompts.numpy(), dtype=np.int64)
    ways = {
        "harness": lambda: measure_speed(backend.generate, prompts, args.new_tokens, warmup=1, repeats=1)[
            "decode_tokens_per_s"
        ],
        "bare": lambda: bare_loop(backend.compiled, prompt, args.new_tokens),
        "LLMPipeline": lambda: pipeline_speed(pipe, genai, prompt, args.new_tokens),
    }
    for way in ways.values():
        way()  # warm-up: first-call compilation and caches
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for index in range(args.rounds):
        for name, way in ways.items():
            samples[name].append(way())
        print(f"round {index + 1}/{args.rounds}: " + ", ".join(f"{n} {s[-1]:.1f}" for n, s in samples.items()))
    env = fingerprint()
    print(
        f"\n{env['cpu_model']} ({env['cpu_isa']}), {backend.version()}, {args.precision}, threads={args.threads}, "
        f"prompt={args.prompt_tokens} new={args.new_tokens} rounds={args.rounds}"
    )
    bare = statistics.median(samples["bare"])
    print(f"{'way':<14}{'decode tok/s (median)':>22}{'min':>8}{'max':>8}{'x bare':>9}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:<14}{median:>22.1f}{min(values):>8.1f}{max(values):>8.1f}{median / bare:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
