"""Generation timing: exact token counts, consistent derived figures, real prompts."""

from __future__ import annotations

import functools
import statistics

import pytest
import scipy.stats
import torch

from evalbench.errors import EvalbenchError
from evalbench.metrics.speed import GenerationTiming, measure_speed, prompt_batch, time_generation


def test_every_step_is_stamped(tiny_model):
    prompts = torch.randint(0, 100, (2, 10))
    timing = time_generation(tiny_model, prompts, new_tokens=7)
    assert len(timing.step_latencies_s) == 6
    assert timing.ttft_s > 0 and timing.decode_s > 0
    assert sum(timing.step_latencies_s) == pytest.approx(timing.decode_s)


class ScriptedGeneration:
    """A generation whose timings are given: the figures derived from them can be computed by hand."""

    def __init__(self, timings: list[tuple[float, float]], new_tokens: int) -> None:
        self.timings, self.new_tokens, self.calls = list(timings), new_tokens, 0

    def __call__(self, prompts: torch.Tensor, new_tokens: int) -> GenerationTiming:
        ttft, decode = self.timings[self.calls]
        self.calls += 1
        return GenerationTiming(ttft, decode, [decode / (new_tokens - 1)] * (new_tokens - 1))


def test_speed_figures_and_intervals_from_known_timings():
    prompts = torch.zeros(3, 16, dtype=torch.long)  # 48 prompt tokens
    # warm-up (discarded), then three timed runs: ttft 0.1/0.2/0.4 s, decode of 4 steps x 3 rows in 0.5/0.6/0.3 s
    generate = ScriptedGeneration([(9.0, 9.0), (0.1, 0.5), (0.2, 0.6), (0.4, 0.3)], new_tokens=5)
    fields = measure_speed(generate, prompts, new_tokens=5, warmup=1, repeats=3)
    assert generate.calls == 4 and fields["speed_repeats"] == 3
    prefill = [480.0, 240.0, 120.0]  # 48 tokens / ttft
    decode = [24.0, 20.0, 40.0]  # 3 rows x 4 decode steps / decode time
    for name, values in (("prefill_tokens_per_s", prefill), ("decode_tokens_per_s", decode)):
        mean, std = statistics.fmean(values), statistics.stdev(values)
        half = scipy.stats.t.ppf(0.975, df=2) * std / 3**0.5
        assert fields[name] == pytest.approx(mean) and fields[f"{name}_std"] == pytest.approx(std)
        low, high = fields[f"{name}_ci_low"], fields[f"{name}_ci_high"]
        assert (low + high) / 2 == pytest.approx(mean) and (high - low) / 2 == pytest.approx(half, rel=1e-3)
    assert fields["ttft_s"] == pytest.approx(0.7 / 3)
    assert fields["token_latency_p50_s"] == pytest.approx(0.5 / 4)  # steps of 0.125, 0.15 and 0.075 s
    assert fields["speed_timed_s"] > 0


def test_generation_never_stops_early_on_eos(tiny_model):
    eos = tiny_model.generation_config.eos_token_id
    prompts = torch.full((1, 4), eos)
    assert len(time_generation(tiny_model, prompts, new_tokens=6).step_latencies_s) == 5


def test_prompts_are_distinct_real_tokens():
    ids = list(range(1000))
    batch = prompt_batch(ids, batch_size=4, prompt_tokens=50)
    assert batch.shape == (4, 50)
    assert batch[1, 0].item() == 50 and len({tuple(row.tolist()) for row in batch}) == 4
    with pytest.raises(EvalbenchError, match=r"speed.prompt_tokens=300 is too many: the text has 1000 tokens"):
        prompt_batch(ids, batch_size=4, prompt_tokens=300)


def test_min_time_adds_repeats_until_enough_time_is_timed(tiny_model):
    prompts = torch.randint(0, 100, (1, 8))
    generate = functools.partial(time_generation, tiny_model)
    fields = measure_speed(generate, prompts, new_tokens=3, warmup=0, repeats=2, min_time_s=0.3)
    assert fields["speed_timed_s"] >= 0.3 and fields["speed_repeats"] > 2


def test_noisy_figures_are_retimed_within_the_budget_and_warned_about(tiny_model):
    prompts = torch.randint(0, 100, (1, 8))
    # No real measurement has a CV of 0: it re-times until the budget is spent, then warns.
    generate = functools.partial(time_generation, tiny_model)
    fields = measure_speed(generate, prompts, new_tokens=3, warmup=0, repeats=2, max_cv=0.0, max_time_s=0.3)
    assert fields["speed_timed_s"] >= 0.3 and fields["speed_repeats"] > 2
    assert any("decode_tokens_per_s varies by" in w and "speed.max_cv=0.0" in w for w in fields["speed_warnings"])
    calm = measure_speed(generate, prompts, new_tokens=3, warmup=0, repeats=2, max_cv=10.0, max_time_s=5)
    assert calm["speed_repeats"] == 2 and calm["speed_warnings"] == []  # already under max_cv: no more repeats
