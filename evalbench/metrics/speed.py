"""Generation speed: prefill and decode throughput, time to first token and per-token latency.

Greedy generation with ``min_new_tokens == max_new_tokens`` so every repeat decodes
the same number of tokens. A stopping criterion stamps the clock each time a token
is produced: the first stamp closes the prefill (time to first token), the gaps
between later stamps are the decode steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from evalbench.errors import EvalbenchError
from evalbench.stats import sample_stats


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


def time_generation(model: nn.Module, prompts: torch.Tensor, new_tokens: int, **options: Any) -> GenerationTiming:
    """Greedily generate exactly ``new_tokens`` tokens after each prompt row, timing each step.

    ``options`` go to ``generate`` (``use_cache``, ``cache_implementation``, ``compile_config``).
    """
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
            stopping_criteria=StoppingCriteriaList([clock]),
            pad_token_id=model.generation_config.pad_token_id or model.generation_config.eos_token_id,
            **{"use_cache": True, **options},
        )
    if len(clock.stamps) != new_tokens:
        raise RuntimeError(f"generation produced {len(clock.stamps)} tokens, expected {new_tokens}")
    steps = np.diff(clock.stamps).tolist()
    return GenerationTiming(clock.stamps[0] - start, clock.stamps[-1] - clock.stamps[0], steps)


FIGURES = ("prefill_tokens_per_s", "decode_tokens_per_s", "ttft_s")


def _figures(runs: list[GenerationTiming], batch: int, prompt_len: int, new_tokens: int) -> dict[str, list[float]]:
    return {
        "prefill_tokens_per_s": [batch * prompt_len / r.ttft_s for r in runs],
        "decode_tokens_per_s": [batch * (new_tokens - 1) / r.decode_s for r in runs],
        "ttft_s": [r.ttft_s for r in runs],
    }


Generate = Callable[[torch.Tensor, int], GenerationTiming]  # a backend's timed greedy generation


def _worst_cv(runs: list[GenerationTiming], prompts: torch.Tensor, new_tokens: int) -> float:
    cvs = [sample_stats(v).cv for v in _figures(runs, *prompts.shape, new_tokens).values()]
    return max((cv for cv in cvs if not math.isnan(cv)), default=math.inf)


def measure_speed(
    generate: Generate,
    prompts: torch.Tensor,
    new_tokens: int,
    warmup: int,
    repeats: int,
    min_time_s: float = 0.0,
    max_cv: float = 0.05,
    max_time_s: float = 0.0,
) -> dict[str, Any]:
    """Time ``generate`` and return the speed record fields, each figure with its mean, spread and 95% CI.

    After ``warmup`` untimed generations: at least ``repeats`` timed ones, and more until they
    add up to ``min_time_s`` seconds; then more while a figure's coefficient of variation is
    above ``max_cv``, until the timed generations add up to ``max_time_s`` (0: no such repeats).
    A figure still above ``max_cv`` at the end is named in ``speed_warnings``.
    """
    if new_tokens < 2:
        raise ValueError(f"speed.new_tokens={new_tokens} must be >= 2 to time decoding")
    for _ in range(warmup):
        generate(prompts, new_tokens)
    runs: list[GenerationTiming] = []
    timed = 0.0
    while (
        len(runs) < repeats
        or timed < min_time_s
        or (timed < max_time_s and _worst_cv(runs, prompts, new_tokens) > max_cv)
    ):
        started = time.perf_counter()
        runs.append(generate(prompts, new_tokens))
        timed += time.perf_counter() - started
    fields: dict[str, Any] = {}
    warnings = []
    for name, values in _figures(runs, *prompts.shape, new_tokens).items():
        stats = sample_stats(values)
        fields.update(stats.fields(name))
        if stats.cv > max_cv:
            warnings.append(f"{name} varies by {stats.cv:.1%} (CV) over {stats.n} repeats, above speed.max_cv={max_cv}")
    steps = [s for r in runs for s in r.step_latencies_s]
    fields["token_latency_p50_s"] = float(np.percentile(steps, 50))
    fields["token_latency_p90_s"] = float(np.percentile(steps, 90))
    fields.update(speed_warmup=warmup, speed_repeats=len(runs), speed_timed_s=timed, speed_warnings=warnings)
    return fields


def prompt_batch(token_ids: list[int], batch_size: int, prompt_tokens: int) -> torch.Tensor:
    """``batch_size`` different prompts of ``prompt_tokens`` consecutive real tokens each."""
    needed = batch_size * prompt_tokens
    if len(token_ids) < needed:
        raise EvalbenchError(
            f"speed.prompt_tokens={prompt_tokens} is too many: the text has {len(token_ids)} tokens, fewer than "
            f"batch_size x speed.prompt_tokens = {needed}; valid: batch_size x speed.prompt_tokens <= {len(token_ids)}"
        )
    return torch.tensor(token_ids[:needed], dtype=torch.long).reshape(batch_size, prompt_tokens)
