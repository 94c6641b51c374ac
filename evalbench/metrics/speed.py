"""Generation speed: prefill and decode throughput, time to first token and per-token latency.

Greedy generation with ``min_new_tokens == max_new_tokens`` so every repeat decodes
the same number of tokens. A stopping criterion stamps the clock each time a token
is produced: the first stamp closes the prefill (time to first token), the gaps
between later stamps are the decode steps.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList


class _TokenClock(StoppingCriteria):
    """Records ``time.perf_counter()`` after every generation step; never stops generation."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        self.stamps.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@dataclass(frozen=True)
class GenerationTiming:
    """The timings of one ``generate`` call."""

    ttft_s: float
    decode_s: float
    step_latencies_s: list[float]


def time_generation(model: nn.Module, prompts: torch.Tensor, new_tokens: int) -> GenerationTiming:
    """Greedily generate exactly ``new_tokens`` tokens after each prompt row, timing each step."""
    clock = _TokenClock()
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            input_ids=prompts,
            attention_mask=torch.ones_like(prompts),
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            min_new_tokens=new_tokens,
            max_new_tokens=new_tokens,
            use_cache=True,
            stopping_criteria=StoppingCriteriaList([clock]),
            pad_token_id=model.generation_config.pad_token_id or model.generation_config.eos_token_id,
        )
    if len(clock.stamps) != new_tokens:
        raise RuntimeError(f"generation produced {len(clock.stamps)} tokens, expected {new_tokens}")
    steps = np.diff(clock.stamps).tolist()
    return GenerationTiming(clock.stamps[0] - start, clock.stamps[-1] - clock.stamps[0], steps)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def measure_speed(
    model: nn.Module, prompts: torch.Tensor, new_tokens: int, warmup: int, repeats: int
) -> dict[str, float | int]:
    """Run ``warmup`` untimed and ``repeats`` timed generations; return the speed record fields."""
    if new_tokens < 2:
        raise ValueError(f"speed.new_tokens={new_tokens} must be >= 2 to time decoding")
    for _ in range(warmup):
        time_generation(model, prompts, new_tokens)
    runs = [time_generation(model, prompts, new_tokens) for _ in range(repeats)]
    batch, prompt_len = prompts.shape
    prefill = [batch * prompt_len / r.ttft_s for r in runs]
    decode = [batch * (new_tokens - 1) / r.decode_s for r in runs]
    ttft = [r.ttft_s for r in runs]
    steps = [s for r in runs for s in r.step_latencies_s]
    fields: dict[str, float | int] = {}
    for name, values in (("prefill_tokens_per_s", prefill), ("decode_tokens_per_s", decode), ("ttft_s", ttft)):
        fields[name], fields[f"{name}_std"] = _mean_std(values)
    fields["token_latency_p50_s"] = float(np.percentile(steps, 50))
    fields["token_latency_p90_s"] = float(np.percentile(steps, 90))
    fields["speed_warmup"], fields["speed_repeats"] = warmup, repeats
    return fields


def prompt_batch(token_ids: list[int], batch_size: int, prompt_tokens: int) -> torch.Tensor:
    """``batch_size`` different prompts of ``prompt_tokens`` consecutive real tokens each."""
    needed = batch_size * prompt_tokens
    if len(token_ids) < needed:
        raise ValueError(
            f"the text has {len(token_ids)} tokens, fewer than batch_size x speed.prompt_tokens = {needed}"
        )
    return torch.tensor(token_ids[:needed], dtype=torch.long).reshape(batch_size, prompt_tokens)
