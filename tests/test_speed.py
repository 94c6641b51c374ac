"""Generation timing: exact token counts, consistent derived figures, real prompts."""

from __future__ import annotations

import pytest
import torch

from evalbench.metrics.speed import measure_speed, prompt_batch, time_generation


def test_every_step_is_stamped(tiny_model):
    prompts = torch.randint(0, 100, (2, 10))
    timing = time_generation(tiny_model, prompts, new_tokens=7)
    assert len(timing.step_latencies_s) == 6
    assert timing.ttft_s > 0 and timing.decode_s > 0
    assert sum(timing.step_latencies_s) == pytest.approx(timing.decode_s)


def test_speed_fields_are_consistent(tiny_model):
    prompts = torch.randint(0, 100, (3, 16))
    fields = measure_speed(tiny_model, prompts, new_tokens=5, warmup=1, repeats=3)
    assert fields["speed_repeats"] == 3 and fields["speed_warmup"] == 1
    for name in ("prefill_tokens_per_s", "decode_tokens_per_s", "ttft_s"):
        assert fields[name] > 0 and fields[f"{name}_std"] >= 0
        assert fields[f"{name}_cv"] == pytest.approx(fields[f"{name}_std"] / fields[name])
        assert fields[f"{name}_ci_low"] <= fields[name] <= fields[f"{name}_ci_high"]
        half = fields[f"{name}_ci_high"] - fields[name]
        assert half == pytest.approx(4.303 * fields[f"{name}_std"] / 3**0.5)  # t(0.975, 2 dof)
    assert fields["token_latency_p90_s"] >= fields["token_latency_p50_s"] > 0
    # Prefill throughput is the mean over repeats of 48 prompt tokens / ttft, never below 48 / mean ttft (Jensen).
    assert fields["prefill_tokens_per_s"] >= 48 / fields["ttft_s"] * (1 - 1e-9)


def test_generation_never_stops_early_on_eos(tiny_model):
    eos = tiny_model.generation_config.eos_token_id
    prompts = torch.full((1, 4), eos)
    assert len(time_generation(tiny_model, prompts, new_tokens=6).step_latencies_s) == 5


def test_prompts_are_distinct_real_tokens():
    ids = list(range(1000))
    batch = prompt_batch(ids, batch_size=4, prompt_tokens=50)
    assert batch.shape == (4, 50)
    assert batch[1, 0].item() == 50 and len({tuple(row.tolist()) for row in batch}) == 4
    with pytest.raises(ValueError, match=r"fewer than batch_size x speed\.prompt_tokens = 1200"):
        prompt_batch(ids, batch_size=4, prompt_tokens=300)


def test_min_time_adds_repeats_until_enough_time_is_timed(tiny_model):
    prompts = torch.randint(0, 100, (1, 8))
    fields = measure_speed(tiny_model, prompts, new_tokens=3, warmup=0, repeats=2, min_time_s=0.3)
    assert fields["speed_timed_s"] >= 0.3 and fields["speed_repeats"] > 2


def test_noisy_figures_are_retimed_within_the_budget_and_warned_about(tiny_model):
    prompts = torch.randint(0, 100, (1, 8))
    # No real measurement has a CV of 0: it re-times until the budget is spent, then warns.
    fields = measure_speed(tiny_model, prompts, new_tokens=3, warmup=0, repeats=2, max_cv=0.0, max_time_s=0.3)
    assert fields["speed_timed_s"] >= 0.3 and fields["speed_repeats"] > 2
    assert any("decode_tokens_per_s varies by" in w and "speed.max_cv=0.0" in w for w in fields["speed_warnings"])
    calm = measure_speed(tiny_model, prompts, new_tokens=3, warmup=0, repeats=2, max_cv=10.0, max_time_s=5)
    assert calm["speed_repeats"] == 2 and calm["speed_warnings"] == []  # already under max_cv: no more repeats
