"""The answer at every floor: lossless within measurement, monotonic in the floor, the cheapest without a target."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalbench import recommend
from evalbench.analysis.objectives import best_first, higher_is_better, with_objectives

BITS = {"fp32": 32, "bf16": 16, "f32": 32, "ort_fp32": 32, "int8": 8, "q8_0": 8, "int4": 4, "q4_0": 4}
BACKEND = {"f32": "llama_cpp", "q8_0": "llama_cpp", "q4_0": "llama_cpp", "ort_fp32": "ort_genai"}


def row(precision: str, ratio: float, half: float, tok_s: float, std: float = 1.0, kld: float | None = None,
        threads: int = 2, batch_size: int = 4) -> dict:  # fmt: skip
    """One scored run: perplexity ratio to the fp32 reference with its 95% half-width, decode speed with its spread."""
    if kld is None:  # 0 only for logits equal to the reference's
        kld = 0.0 if (ratio, half) == (1.0, 0.0) else abs(ratio - 1) / 3 + 1e-4
    return {
        "model": "m", "env.machine_id": "box", "backend": BACKEND.get(precision, "torch"), "precision": precision,
        "weight_bits": BITS[precision], "threads": threads, "batch_size": batch_size, "status": "ok", "error": None,
        "perplexity": 20.0 * ratio, "ppl_ratio": ratio, "ppl_ratio_ci_low": ratio - half,
        "ppl_ratio_ci_high": ratio + half, "reference_key": "ref", "eval_token_hash": "aaaa", "eval_tokens": 4092,
        "ppl_context": 1024, "decode_tokens_per_s": tok_s, "decode_tokens_per_s_std": std, "speed_repeats": 5,
        "peak_rss_bytes": 1e9, "ttft_s": 0.1, "kld_mean": kld, "kld_mean_stderr": kld / 50,
        "same_top_rate": 100.0 if kld == 0 else 95.0,
    }  # fmt: skip


# The sample sweep's shape: three runtimes' fp32 runs equal to the reference; torch fp32 the slowest of them.
LOSSLESS = [
    row("fp32", 1.0, 0.0, 49.3, threads=1),
    row("fp32", 1.0, 0.0, 40.0, threads=2),
    row("ort_fp32", 1.0000, 0.0002, 192.0),
    row("f32", 1.0000, 0.0003, 149.0),
    row("bf16", 1.0040, 0.0010, 60.0),  # clearly 0.4% worse: not lossless
    row("int8", 1.0050, 0.0010, 170.0, kld=0.0034),
    row("q8_0", 1.0053, 0.0010, 221.0, kld=0.0036),
    row("int4", 1.0500, 0.0030, 210.0, kld=0.0012),  # low KLD, high perplexity: the metrics disagree
    row("q4_0", 1.2700, 0.0100, 260.0, kld=0.09),
]


def describe(rec) -> tuple[str, int, int]:
    return rec.config.configuration, rec.config.threads, rec.config.batch_size


def test_floor_zero_takes_the_fastest_run_equal_to_the_baseline_on_any_runtime():
    rec = recommend(pd.DataFrame(LOSSLESS), max_quality_loss=0)
    assert describe(rec) == ("ort_genai ort_fp32", 2, 4)
    lossless_step = rec.trace[1]
    assert lossless_step.name == "no loss allowed: lossless precisions"
    assert "4 of 5 runs meet no quality loss" in lossless_step.reason  # bf16 is clearly worse
    assert "then llama_cpp f32/t2/b4 (149.0 tok/s), torch fp32/t1/b4 (49.3 tok/s)" in lossless_step.reason
    assert rec.trace[-1].outcome == "kept" and not rec.borderline


def test_a_kld_floor_with_no_quantized_run_within_it_keeps_a_lossless_precision():
    rec = recommend(pd.DataFrame(LOSSLESS), quality="kld_mean", max_quality_loss=0.001)
    assert describe(rec) == ("ort_genai ort_fp32", 2, 4)  # INT8's 0.0034 and INT4's 0.0012 are above 0.001
    assert rec.verdict == "recommend"
    names = [step.name for step in rec.trace]
    assert names[1] == "loss allowed: try INT8 (8-bit weights)" and rec.trace[1].outcome == "fails"
    assert "and 16/32-bit runs" in names[3] and rec.trace[3].outcome == "chosen"
    assert "step 4's pick, is the cheapest run meeting the floor" in rec.trace[4].reason


def test_without_a_target_the_cheapest_run_meeting_the_floor_wins_whatever_its_bits():
    table = pd.DataFrame(
        [row("fp32", 1.0, 0.0, 20.0), row("int8", 1.005, 0.001, 60.0), row("int4", 1.008, 0.001, 100.0)]
    )
    rec = recommend(table, max_quality_loss=0.01)
    assert rec.config.precision == "int4"
    assert rec.trace[1].outcome == "chosen" and "torch int8/t2/b4 (60.0 tok/s)" in rec.trace[1].reason  # walked
    assert "torch int4/t2/b4 (100.0 tok/s), step 3's pick" in rec.trace[-2].reason


def test_with_a_target_int8_meets_the_tree_stops_at_int8():
    table = pd.DataFrame(
        [row("fp32", 1.0, 0.0, 20.0), row("int8", 1.005, 0.001, 60.0), row("int4", 1.008, 0.001, 100.0)]
    )
    rec = recommend(table, max_quality_loss=0.01, min_decode_tokens_per_s=50)
    assert rec.config.precision == "int8"
    assert [step.name for step in rec.trace] == [
        "baseline",
        "loss allowed: try INT8 (8-bit weights)",
        "dominance check",
    ]


@pytest.mark.parametrize("cost", ["s_per_token", "decode_tokens_per_s"])
def test_a_throughput_cost_ranks_the_fastest_first(cost):
    rec = recommend(pd.DataFrame(LOSSLESS), max_quality_loss=0.01, cost=cost)
    assert describe(rec) == ("llama_cpp q8_0", 2, 4)  # 221 tok/s at +0.53%; q4_0 is faster but +27%


def test_one_table_of_directions():
    for column in ("decode_tokens_per_s", "prefill_tokens_per_s", "same_top_rate", "task.lambada_openai.acc"):
        assert higher_is_better(column), column
    for column in (
        "s_per_token",
        "peak_rss_bytes",
        "ttft_s",
        "kld_mean",
        "ppl_ratio",
        "task.lambada_openai.perplexity",
    ):
        assert not higher_is_better(column), column
    table = pd.DataFrame(LOSSLESS)
    assert best_first(table, "decode_tokens_per_s").iloc[0].precision == "q4_0"
    assert best_first(table, "kld_mean").iloc[0].precision == "fp32"


FLOORS = [0, 1e-4, 1e-3, 0.003, 0.01, 0.03, 0.1, 0.3, 1]


def answers_never_get_slower(table: pd.DataFrame, quality: str = "perplexity", **targets) -> list[float]:
    """Decode speed of the answer at each of ``FLOORS`` (NaN for none)."""
    speeds = []
    for floor in FLOORS:
        rec = recommend(table, max_quality_loss=floor, quality=quality, **targets)
        speeds.append(float("nan") if rec.config is None else rec.config.decode_tokens_per_s)
    return speeds


def test_answers_never_get_slower_as_the_floor_loosens():
    speeds = answers_never_get_slower(pd.DataFrame(LOSSLESS))
    assert speeds == sorted(speeds) and speeds[0] == 192.0 and speeds[-1] == 260.0


PRECISIONS = st.sampled_from(sorted(BITS))
RUNS = st.lists(
    st.tuples(
        PRECISIONS,
        st.floats(0.995, 1.4),  # perplexity ratio to the reference
        st.floats(0.0, 0.02),  # its 95% half-width
        st.floats(5.0, 300.0),  # decode tokens/s
        st.floats(0.0, 20.0),  # its standard deviation over 5 repeats
    ),
    min_size=1,
    max_size=12,
)


def random_table(runs: list[tuple]) -> pd.DataFrame:
    """The baseline (torch fp32, always measured) and ``runs``; torch fp32 at other settings scores as the baseline."""
    rows = [row("fp32", 1.0, 0.0, 30.0, threads=1)]
    for i, (precision, ratio, half, tok_s, std) in enumerate(runs, 1):
        ratio, half = (1.0, 0.0) if precision == "fp32" else (ratio, half)
        rows.append(row(precision, ratio, half, tok_s, std=std, threads=i % 2 + 1, batch_size=i))
    return with_objectives(pd.DataFrame(rows))


@settings(max_examples=6, deadline=None)  # 18 recommendations each: about 2 s an example here
@given(RUNS)
def test_property_no_target_the_answer_is_never_dearer_at_a_looser_floor(runs):
    table = random_table(runs)
    speeds = answers_never_get_slower(table)
    assert all(s == s for s in speeds), speeds  # the baseline meets every floor: never "nothing meets"
    assert speeds == sorted(speeds), speeds
    kld = answers_never_get_slower(table, quality="kld_mean")
    assert all(s == s for s in kld) and kld == sorted(kld), kld


@settings(max_examples=60, deadline=None)
@given(RUNS, st.floats(5.0, 300.0), st.sampled_from(FLOORS))
def test_property_with_a_target_an_answer_whenever_a_run_clearly_meets_everything(runs, target, floor):
    table = random_table(runs)
    rec = recommend(table, max_quality_loss=floor, min_decode_tokens_per_s=target)
    if floor == 0:
        return  # no loss allowed: only lossless precisions are candidates, else distillation
    ok = table[(table.ppl_ratio_ci_high - 1 <= floor) | (table.ppl_ratio_ci_low <= 1)]
    fast = ok[ok.decode_tokens_per_s - 2.776 * ok.decode_tokens_per_s_std / 5**0.5 >= target]
    if len(fast):
        assert rec.config is not None, str(rec)
    if rec.config is not None:  # clearly within the floor, or borderline (said so) when nothing is clear
        assert rec.config.ppl_ratio_ci_low - 1 <= floor


@settings(max_examples=40, deadline=None)
@given(RUNS)
def test_property_at_floor_zero_the_answer_is_lossless_and_not_beaten_by_a_lossless_run(runs):
    table = random_table(runs)
    rec = recommend(table, max_quality_loss=0)
    chosen = rec.config
    assert chosen.weight_bits >= 16 and chosen.ppl_ratio_ci_low <= 1
    lossless = table[(table.weight_bits >= 16) & (table.ppl_ratio_ci_low <= 1)]
    lower = lossless.decode_tokens_per_s - 2.776 * lossless.decode_tokens_per_s_std / 5**0.5
    upper = chosen.decode_tokens_per_s + 2.776 * chosen.decode_tokens_per_s_std / 5**0.5
    assert not (lower > upper).any()  # no lossless run is faster beyond noise
