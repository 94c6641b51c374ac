"""The recommender on crafted tables that reach every branch of the decision tree."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from evalbench import recommend
from evalbench.analysis.objectives import with_objectives
from evalbench.analysis.pareto import pareto_front
from evalbench.errors import EvalbenchError


def run(precision: str, ppl: float, tok_s: float, threads: int = 1, batch_size: int = 1, std: float = 0.0,
        rss: float = 1e9, status: str = "ok", model: str = "m", machine: str = "box") -> dict:  # fmt: skip
    return {"model": model, "precision": precision, "threads": threads, "batch_size": batch_size, "perplexity": ppl,
            "decode_tokens_per_s": tok_s, "decode_tokens_per_s_std": std, "speed_repeats": 5, "peak_rss_bytes": rss,
            "ttft_s": 0.1, "status": status, "error": None if status == "ok" else "RuntimeError: boom",
            "env.machine_id": machine, "prefill_tokens_per_s": 8 * tok_s, "weight_bytes": rss / 2}  # fmt: skip


TABLE = [
    run("fp32", 20.0, 10),
    run("fp32", 20.0, 12, threads=2),
    run("bf16", 20.0, 14),
    run("int8", 20.2, 22),
    run("int8", 20.2, 26, threads=2),  # the cheapest int8
    run("int8", 20.2, 24, threads=2, batch_size=4),
    run("int8_dynamic", 21.5, 30),  # faster but 7.5% worse
    run("int4", 20.6, 35),
]


def steps(rec) -> list[str]:
    return [s.name for s in rec.trace]


def test_int8_meets_and_the_cheapest_is_chosen():
    shuffled = pd.DataFrame(TABLE).sample(frac=1, random_state=3)  # order of rows must not matter
    rec = recommend(shuffled, max_quality_loss=0.05, min_decode_tokens_per_s=20)
    assert rec.verdict == "recommend" and not rec.borderline
    assert (rec.config.precision, rec.config.threads, rec.config.batch_size) == ("int8", 2, 1)
    assert steps(rec) == ["baseline", "loss allowed: try INT8 (8-bit weights)", "dominance check"]
    assert rec.trace[-1].outcome == "kept"
    assert "RECOMMENDED: m torch int8 threads=2 batch_size=1" in str(rec)
    assert rec.config.quality_loss == pytest.approx(0.01)


def test_int8_fails_and_int4_meets():
    rec = recommend(pd.DataFrame(TABLE), max_quality_loss=0.05, min_decode_tokens_per_s=32)
    assert rec.config.precision == "int4"
    assert steps(rec) == [
        "baseline",
        "loss allowed: try INT8 (8-bit weights)",
        "INT8 fails: fewer bits (INT4 and below) or pruning (0 pruned runs measured)",
        "dominance check",
    ]
    assert "decode_tokens_per_s >= 32 missed: best 26" in rec.trace[1].reason  # among runs within the floor


def test_quality_floor_excludes_lossy_int8_scheme():
    rec = recommend(pd.DataFrame(TABLE), max_quality_loss=0.02, min_decode_tokens_per_s=28)
    # int8_dynamic is fast enough but 7.5% worse; int4 is 3% worse: nothing meets.
    assert rec.config is None and rec.verdict.startswith("nothing meets")
    verdict = rec.trace[-1].reason
    assert "decode_tokens_per_s >= 28 missed: best 26" in verdict  # among int8 runs within the floor
    assert "perplexity within 2.0% of the baseline missed: best loss +3.00%" in verdict
    assert "prune" in verdict and "distil" in verdict and "relax" in verdict


def test_no_loss_allowed_takes_the_cheapest_lossless():
    rec = recommend(pd.DataFrame(TABLE), max_quality_loss=0, min_decode_tokens_per_s=13)
    assert rec.config.precision == "bf16"
    assert steps(rec) == ["baseline", "no loss allowed: lossless precisions", "dominance check"]


def test_no_loss_allowed_and_too_slow_means_distillation():
    rec = recommend(pd.DataFrame(TABLE), max_quality_loss=0, min_decode_tokens_per_s=50)
    assert rec.config is None and rec.verdict.startswith("distillation")
    assert "decode_tokens_per_s >= 50 missed: best 14" in rec.trace[-1].reason
    assert "distillation to a smaller model" in str(rec)


def test_missing_baseline_falls_back_and_says_so():
    table = pd.DataFrame([r for r in TABLE if r["precision"] != "fp32"])
    rec = recommend(table, max_quality_loss=0.05)
    assert rec.trace[0].outcome == "torch bf16" and "torch fp32 was not measured" in rec.trace[0].reason
    assert rec.config.precision == "int4"  # no speed target: the cheapest run within the floor (+3%), any bits
    assert rec.trace[-2].name == "no performance target: the cheapest run meeting the floor"


def test_borderline_within_noise():
    table = pd.DataFrame([run("fp32", 20.0, 10), run("int8", 20.1, 20.5, std=2.0)])
    rec = recommend(table, max_quality_loss=0.05, min_decode_tokens_per_s=20)
    assert rec.config.precision == "int8" and rec.borderline
    assert "borderline" in str(rec)
    clear = recommend(table, max_quality_loss=0.05, min_decode_tokens_per_s=15)
    assert not clear.borderline


def test_failed_runs_are_ignored_and_said():
    table = pd.DataFrame([*TABLE, run("int8", 19.0, 500, status="failed")])
    rec = recommend(table, max_quality_loss=0.05, min_decode_tokens_per_s=20)
    assert rec.trace[0].name == "input" and "1 failed run(s) left out" in rec.trace[0].reason
    assert rec.config.decode_tokens_per_s == 26


def test_memory_target():
    table = pd.DataFrame([run("fp32", 20, 10, rss=4e9), run("int8", 20.1, 20, rss=3e9), run("int4", 20.3, 18, rss=1e9)])
    rec = recommend(table, max_quality_loss=0.05, max_memory_bytes=2e9)
    assert rec.config.precision == "int4"
    assert "peak_rss_bytes <= 2e+09 missed: best 3e+09" in rec.trace[1].reason


def test_several_models_need_choosing():
    table = pd.DataFrame([*TABLE, run("fp32", 9.0, 5, model="other")])
    with pytest.raises(EvalbenchError, match=r"several models, machines or token sets \(m@box \(not scored\), other"):
        recommend(table)
    alone = recommend(table, model="other", max_quality_loss=0.05)  # only fp32 measured: nothing lossy to try
    assert alone.config.precision == "fp32" and [s.outcome for s in alone.trace[1:4]] == ["not measured"] * 2 + [
        "chosen"
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_quality_loss": -0.1}, r"max_quality_loss=-0.1 is invalid; valid: a number >= 0"),
        ({"cost": "watts"}, r"unknown column 'watts'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(EvalbenchError, match=message):
        recommend(pd.DataFrame(TABLE), **kwargs)


def test_empty_table():
    with pytest.raises(EvalbenchError, match="empty"):
        recommend(pd.DataFrame())


def test_each_model_and_machine_gets_its_own_recommendation():
    from evalbench.report.export import Targets, recommend_each

    table = pd.DataFrame([*TABLE, *[{**r, "env.machine_id": "laptop"} for r in TABLE], run("fp32", 9.0, 5, model="x")])
    recs = recommend_each(table, Targets(max_quality_loss=0.05, min_decode_tokens_per_s=20))
    assert set(recs) == {("m", "box", "not scored"), ("m", "laptop", "not scored"), ("x", "box", "not scored")}
    assert recs[("m", "laptop", "not scored")].config.precision == "int8"
    assert recs[("x", "box", "not scored")].config is None


def with_quality(row: dict, kld: float, same_top: float, acc: float | None = None, acc_stderr: float = 0.0) -> dict:
    extra = {"kld_mean": kld, "same_top_rate": same_top}
    if acc is not None:
        extra |= {"task.lambada_openai.acc": acc, "task.lambada_openai.acc_stderr": acc_stderr}
    return row | extra


QUALITY_TABLE = [
    with_quality(run("fp32", 20.0, 10), 0.0, 100.0, 0.40),
    with_quality(run("int8", 20.2, 22), 0.004, 97.0, 0.39, 0.01),
    with_quality(run("int8_dynamic", 20.3, 30), 0.03, 91.0, 0.36, 0.01),  # as good by perplexity, not by KLD
    with_quality(run("int4", 20.6, 35), 0.008, 96.0, 0.38, 0.01),
]


def test_mean_kld_floor_is_absolute_and_excludes_the_divergent_int8_scheme():
    rec = recommend(pd.DataFrame(QUALITY_TABLE), quality="kld_mean", max_quality_loss=0.01, min_decode_tokens_per_s=25)
    assert rec.config.precision == "int4"  # int8_dynamic is fast enough but its KLD is 0.03
    assert "decode_tokens_per_s >= 25 missed: best 22" in rec.trace[1].reason  # the int8 run within the floor
    assert "meet kld_mean <= 0.01 (baseline + 0.01)" in rec.trace[2].reason
    assert rec.config.quality_loss == pytest.approx(0.008)
    assert "kld_mean loss +0.008" in str(rec)
    by_perplexity = recommend(pd.DataFrame(QUALITY_TABLE), max_quality_loss=0.02, min_decode_tokens_per_s=25)
    assert by_perplexity.config.precision == "int8_dynamic"  # what perplexity alone would have chosen


def test_same_top_floor_is_relative_to_the_baselines_100_percent():
    rec = recommend(pd.DataFrame(QUALITY_TABLE), quality="same_top_rate", max_quality_loss=0.05)
    assert rec.config.precision == "int4"  # 96% same-top is within 5% of fp32's 100%; int8_dynamic's 91% is not
    strict = recommend(
        pd.DataFrame(QUALITY_TABLE), quality="same_top_rate", max_quality_loss=0.02, min_decode_tokens_per_s=5
    )
    assert "same_top_rate within 2.0% of the baseline missed: best loss +3.00%" in strict.trace[1].reason
    assert strict.config.precision == "fp32"  # INT8 and fewer bits lose too much: keep 32-bit
    assert strict.trace[-2].name == "INT8 and fewer bits lose too much or miss a target: keep 16/32-bit"


def test_task_accuracy_floor_uses_its_stderr():
    # int8 loses 2.5% of accuracy; with stderr 0.01 its 95% interval spans a loss of -2.4% to +7.4%: it cannot be
    # told from fp32. int4 loses 5% (+0.1% to +9.9%), int8_dynamic 10% (+5.1% to +14.9%).
    table = pd.DataFrame(QUALITY_TABLE)
    loose = recommend(table, quality="task.lambada_openai.acc", max_quality_loss=0.10)
    assert loose.config.precision == "int4" and not loose.borderline
    tight = recommend(table, quality="task.lambada_openai.acc", max_quality_loss=0.05)
    assert tight.config.precision == "int8" and not tight.borderline  # int4 straddles 5%: borderline, not chosen
    assert "indistinguishable from the baseline" in str(tight)
    exact = recommend(table.drop(columns="task.lambada_openai.acc_stderr"), quality="task.lambada_openai.acc",
                      max_quality_loss=0.04)  # fmt: skip
    assert exact.config.precision == "int8" and not exact.borderline  # no stderr recorded: taken as exact


def scored(row: dict, ratio: float, half: float, tokens: str = "aaaa", reference: str = "ref-fp32") -> dict:
    """``row`` with a perplexity ratio to the stored reference, its 95% interval and the token set it was scored on."""
    interval = {"ppl_ratio": ratio, "ppl_ratio_ci_low": ratio - half, "ppl_ratio_ci_high": ratio + half}
    token_set = {"eval_token_hash": tokens, "eval_tokens": 4092, "ppl_context": 1024}
    return row | interval | token_set | {"reference_key": reference}


# The sample sweep: the tree's INT8 step stops at int8 (61.1 tok/s, +0.13%), while int4 decodes
# 72.5 tok/s at +0.11%: as good within noise and faster beyond it.
DOMINATED = [
    scored(run("fp32", 20.0, 20.0, threads=2, batch_size=4, std=0.5), 1.0, 0.0),
    scored(run("int8", 20.026, 61.1, threads=2, batch_size=4, std=1.0), 1.0013, 0.0008),
    scored(run("int4", 20.022, 72.5, threads=2, batch_size=4, std=1.0), 1.0011, 0.0009),
    scored(run("int4", 20.022, 61.5, threads=1, batch_size=4, std=1.0), 1.0011, 0.0009),
]


def test_a_dominated_tree_pick_is_overridden_and_the_trace_says_why():
    rec = recommend(pd.DataFrame(DOMINATED), max_quality_loss=0.01, min_decode_tokens_per_s=50)
    assert (rec.config.precision, rec.config.threads) == ("int4", 2)
    tree, override = rec.trace[-2], rec.trace[-1]
    assert tree.name.startswith("loss allowed: try INT8") and "torch int8/t2/b4" in tree.reason
    assert override.name == "dominance check" and override.outcome == "overrides"
    assert "step 2's pick torch int8/t2/b4: 61.1 decode tok/s [" in override.reason
    assert "beaten beyond measurement noise by torch int4/t2/b4: 72.5 decode tok/s [" in override.reason
    assert "perplexity loss +0.13% [" in override.reason and "perplexity loss +0.11% [" in override.reason
    assert rec.config.name in rec.frontier.index  # the answer is on the Pareto front


def test_a_run_ahead_only_within_noise_does_not_override_and_is_named():
    table = [*DOMINATED[:2], scored(run("int4", 20.022, 62.0, threads=2, batch_size=4, std=5.0), 1.0011, 0.0009)]
    rec = recommend(pd.DataFrame(table), max_quality_loss=0.01, min_decode_tokens_per_s=50)
    assert rec.config.precision == "int8" and rec.trace[-1].outcome == "kept"
    assert "torch int4/t2/b4: 62.0 decode tok/s" in rec.trace[-1].reason and "within measurement noise" in str(rec)


def test_a_faster_run_that_is_worse_beyond_noise_does_not_override():
    table = [*DOMINATED[:2], scored(run("int4", 20.1, 90.0, threads=2, batch_size=4, std=1.0), 1.005, 0.0009)]
    rec = recommend(pd.DataFrame(table), max_quality_loss=0.01, min_decode_tokens_per_s=50)
    assert rec.config.precision == "int8" and rec.trace[-1].outcome == "kept"


def test_ppl_ratio_is_against_the_baseline_whatever_the_reference_was():
    # Scored against a bf16 reference: fp32 is 0.5% better than it, int8 0.3% worse.
    table = [
        scored(run("fp32", 20.0, 10), 0.995, 0.001, reference="ref-bf16"),
        scored(run("bf16", 20.1, 14), 1.0, 0.0, reference="ref-bf16"),
        scored(run("int8", 20.16, 26), 1.003, 0.002, reference="ref-bf16"),
    ]
    runs = with_objectives(pd.DataFrame(table)).set_index("precision")
    assert runs.loc["fp32", "ppl_ratio"] == pytest.approx(1.0)
    assert runs.loc["int8", "ppl_ratio"] == pytest.approx(1.003 / 0.995)
    assert runs.loc["int8", "ppl_ratio_vs_reference"] == 1.003  # what the run recorded, kept beside it
    half = math.log(1.005 / 1.001) / 2, math.log(0.996 / 0.994) / 2  # int8's and fp32's log half-widths
    assert math.log(runs.loc["int8", "ppl_ratio_ci_high"] / runs.loc["int8", "ppl_ratio"]) == pytest.approx(
        math.hypot(*half), rel=1e-3
    )
    # int8 is +0.80% [+0.66%, +0.95%] against fp32: borderline at 0.8%; bf16 (+0.50%) clearly meets it.
    rec = recommend(pd.DataFrame(table), max_quality_loss=0.008)
    assert rec.config.precision == "bf16" and not rec.borderline
    fast = recommend(pd.DataFrame(table), max_quality_loss=0.008, min_decode_tokens_per_s=20)
    assert fast.config.precision == "int8" and fast.borderline  # only int8 is fast enough: borderline, said so


def test_a_lower_is_better_task_metric_rewards_the_better_model():
    table = pd.DataFrame([
        run("fp32", 20.0, 10) | {"task.lambada_openai.perplexity": 20.0, "task.lambada_openai.acc": 0.40},
        run("int8", 20.2, 22) | {"task.lambada_openai.perplexity": 20.5, "task.lambada_openai.acc": 0.39},
        run("int4", 20.6, 35) | {"task.lambada_openai.perplexity": 30.0, "task.lambada_openai.acc": 0.33},
    ])  # fmt: skip
    rec = recommend(table, quality="task.lambada_openai.perplexity", max_quality_loss=0.05)
    assert rec.config.precision == "int8" and rec.config.quality_loss == pytest.approx(0.025)
    assert "within 5.0% of the baseline" in str(rec)
    front = pareto_front(table, quality="task.lambada_openai.perplexity")
    assert set(front.precision) == {"fp32", "int8", "int4"}  # each faster one is worse: all on the front
    slow = run("int8_dynamic", 21, 9) | {"task.lambada_openai.perplexity": 40.0}
    worse_and_slower = pd.concat([table, pd.DataFrame([slow])])
    front = pareto_front(worse_and_slower, quality="task.lambada_openai.perplexity")
    assert "int8_dynamic" not in set(front.precision)


def test_runs_on_two_token_sets_are_never_compared():
    first = [scored(r, 1.0 + (r["perplexity"] - 20) / 20, 0.001, tokens="aaaa") for r in TABLE]
    other = [scored(r | {"perplexity": r["perplexity"] * 2}, 1.0, 0.001, tokens="bbbb") for r in TABLE[:2]]
    with pytest.raises(EvalbenchError, match=r"several models, machines or token sets .*tokens aaaa.*tokens bbbb"):
        recommend(pd.DataFrame([*first, *other]))
    from evalbench.report.export import Targets, recommend_each

    recs = recommend_each(pd.DataFrame([*first, *other]), Targets(max_quality_loss=0.05))
    assert len(recs) == 2
    by_tokens = {tokens[:11]: rec for (_, _, tokens), rec in recs.items()}
    assert by_tokens["tokens aaaa"].floor.baseline == 20.0  # not averaged with the other set's 40.0
    assert by_tokens["tokens aaaa"].config.precision == "int4"
    assert by_tokens["tokens bbbb"].floor.baseline == 40.0 and by_tokens["tokens bbbb"].config.precision == "fp32"


def test_a_model_whose_runs_all_failed_does_not_stop_the_others(tmp_path):
    from evalbench.report.export import Targets, write_report

    broken = [run("fp32", float("nan"), float("nan"), status="failed", model="broken"),
              run("int8", float("nan"), float("nan"), status="failed", model="broken")]  # fmt: skip
    outcome = write_report(pd.DataFrame([*TABLE, *broken]), tmp_path, Targets(max_quality_loss=0.05), png=False)
    recs = outcome["recommendations"]
    assert recs[("m", "box", "not scored")].config.precision == "int4"
    failed = recs[("broken", "box", "not scored")]
    assert failed.config is None and failed.verdict == "nothing to recommend: all 2 runs failed"
    report = (tmp_path / "report.md").read_text()
    assert "## broken on machine box" in report and "RuntimeError: boom" in report
    assert "<h2>m on machine box</h2>" in (tmp_path / "report.html").read_text()


def test_a_borderline_tree_pick_gives_way_to_a_clear_run_that_beats_it():
    table = pd.DataFrame([run("fp32", 20.0, 10), run("int8", 20.1, 20.5, std=2.0), run("int4", 20.1, 30, std=0.5)])
    rec = recommend(table, max_quality_loss=0.05, min_decode_tokens_per_s=20)
    assert rec.trace[-2].outcome == "chosen" and "are borderline on" in rec.trace[-2].reason  # the INT8 step
    assert rec.config.precision == "int4" and not rec.borderline and rec.trace[-1].outcome == "overrides"


def test_a_failed_run_joins_the_one_token_set_of_its_model():
    from evalbench.report.export import Targets, recommend_each

    table = [scored(r, 1.0 + (r["perplexity"] - 20) / 20, 0.001) for r in TABLE]
    failed = run("int4", float("nan"), float("nan"), status="failed")  # failed before scoring: no token set
    [(group, rec)] = recommend_each(pd.DataFrame([*table, failed]), Targets(max_quality_loss=0.05)).items()
    assert group == ("m", "box", "tokens aaaa n 4092 context 1024")
    assert rec.trace[0].name == "input" and "1 failed run(s) left out" in rec.trace[0].reason


def test_each_token_set_gets_its_own_figure(tmp_path):
    from evalbench.report.export import Targets, write_report

    first = [scored(r, 1.0 + (r["perplexity"] - 20) / 20, 0.001, tokens="aaaa") for r in TABLE]
    other = [scored(r, 1.0, 0.001, tokens="bbbb") for r in TABLE[:2]]
    write_report(pd.DataFrame([*first, *other]), tmp_path, Targets(max_quality_loss=0.05), png=False)
    assert sorted(p.name for p in tmp_path.glob("quality_vs_speed-*.html")) == [
        "quality_vs_speed-m-box-aaaa.html",
        "quality_vs_speed-m-box-bbbb.html",
    ]


def pruned(row: dict, method: str, sparsity: float) -> dict:
    return {**row, "pruning_method": method, "pruning_sparsity": sparsity}


PRUNED_TABLE = [pruned(r, "none", 0.0) for r in TABLE] + [
    pruned(run("fp32", 20.8, 37), "structured", 0.25),  # within 5%, faster than int8 and int4
    pruned(run("fp32", 20.0, 40), "magnitude", 0.5),  # as good as fp32 here, and fastest: never lossless
]


def test_int8_fails_and_a_measured_pruned_run_meets():
    rec = recommend(pd.DataFrame(PRUNED_TABLE[:-1]), max_quality_loss=0.05, min_decode_tokens_per_s=30)
    assert rec.config.configuration == "torch fp32 (structured-pruned 25%)"
    assert steps(rec)[2] == "INT8 fails: fewer bits (INT4 and below) or pruning (1 pruned runs measured)"
    assert "RECOMMENDED: m torch fp32 (structured-pruned 25%) threads=1" in str(rec)


def test_pruned_runs_are_not_lossless_and_not_int8():
    lossless = recommend(pd.DataFrame(PRUNED_TABLE), max_quality_loss=0)
    assert lossless.config.configuration == "torch bf16"  # the 40 tok/s pruned fp32 run is not lossless
    int8_step = recommend(pd.DataFrame(PRUNED_TABLE), max_quality_loss=0.05, min_decode_tokens_per_s=20).trace[1]
    assert set(int8_step.rows["configuration"]) == {"torch int8", "torch int8_dynamic"}


def test_when_pruning_was_measured_and_fails_it_is_not_named_as_the_next_lever():
    table = pd.DataFrame(PRUNED_TABLE[:-1])
    rec = recommend(table, max_quality_loss=0.05, min_decode_tokens_per_s=100)
    assert rec.config is None and "Next levers: distil into a smaller model" in rec.trace[-1].reason
    unpruned = recommend(pd.DataFrame(TABLE), max_quality_loss=0.05, min_decode_tokens_per_s=100)
    assert "Next levers: prune the model" in unpruned.trace[-1].reason
