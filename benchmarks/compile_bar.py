"""Compiled PyTorch against eager on the sample model: the bar is compiled int8 and int4 decode >= 2x eager fp32.

Batch 1, 2 threads. Each configuration is loaded through evalbench's torch backend; the compiled
ones compile in ``prepare_generation`` (Inductor's on-disk cache under ``cache_dir/inductor``: a
second run of this script reads its graphs from there). Then all are timed round-robin, so that a
slow spell of a shared machine hits them alike, and each ratio is of medians from this run.

    EVALBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/compile_bar.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf
from round_robin import print_medians, time_round_robin

from evalbench.backends.torch.config import TorchConfig
from evalbench.backends.torch.precision.fp32 import FP32
from evalbench.backends.torch.precision.int4 import Int4WeightOnly
from evalbench.backends.torch.precision.int8 import Int8WeightOnly
from evalbench.config import CONFIG_DIR, DatasetConfig
from evalbench.dataset.text import load_text
from evalbench.metrics.perplexity import tokenize
from evalbench.metrics.speed import prompt_batch
from evalbench.model.loader import load_tokenizer

CONFIGURATIONS = {  # name -> (precision, compile)
    "eager fp32": (FP32(), False),
    "eager int8": (Int8WeightOnly(), False),
    "eager int4": (Int4WeightOnly(), False),
    "compiled fp32": (FP32(), True),
    "compiled int8": (Int8WeightOnly(), True),
    "compiled int4": (Int4WeightOnly(), True),
}
BAR = {"compiled int8": 2.0, "compiled int4": 2.0}  # x eager fp32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 when the bar is missed")
    args = parser.parse_args()

    model_cfg = OmegaConf.load(CONFIG_DIR / "model" / "smollm2-135m.yaml")
    cache_dir = Path(os.environ.get("EVALBENCH_CACHE_DIR", "~/.cache/evalbench")).expanduser()
    tokenizer, _ = load_tokenizer(model_cfg, cache_dir)
    text = load_text(DatasetConfig(data_dir=os.environ.get("EVALBENCH_DATA_DIR")))
    prompts = prompt_batch(tokenize(text.text, tokenizer, args.prompt_tokens).ids, 1, args.prompt_tokens)

    backends, compile_s = {}, {}
    for name, (precision, compile) in CONFIGURATIONS.items():
        backend = TorchConfig(compile=compile).build(precision, model_cfg, cache_dir)
        backend.load(tokenizer)
        backend.set_threads(args.threads)
        fields = backend.prepare_generation(prompts, args.new_tokens, kv_cache=True)
        compile_s[name] = fields.get("compile_time_s")
        hits = fields.get("compile_fx_graph_cache_hits")
        print(
            f"{name}: ready"
            + (f", compiled in {compile_s[name]:.1f} s (FX graph cache hits {hits})" if compile else "")
        )
        backends[name] = backend

    generators = {name: backend.generate for name, backend in backends.items()}
    samples = time_round_robin(generators, prompts, args.new_tokens, args.rounds)
    setting = f"threads={args.threads} batch_size=1 prompt={args.prompt_tokens} new={args.new_tokens}"
    median = print_medians(samples, "eager fp32", setting)
    missed = [name for name, needed in BAR.items() if median[name] / median["eager fp32"] < needed]
    for name, needed in BAR.items():
        ratio = median[name] / median["eager fp32"]
        print(f"bar {name}: {ratio:.2f}x eager fp32, needs >= {needed}x: {'met' if name not in missed else 'MISSED'}")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
