"""The evalbench command on a tiny random-weight model: sweeps, failures, records and exit codes."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import evalbench

from evalbench import load_results


def test_sweep_records_every_configuration_and_goes_past_failures(tiny_args, tmp_path):
    out = evalbench(
        "-m", "precision=fp32,bf16,int8,int8_dynamic,int4,int3", "threads=1,0", "batch_size=2", *tiny_args,
        "report.enabled=true", "report.max_quality_loss=0.5", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "12 configurations, 5 ok, 7 failed" in out.stdout
    # The sweep ends with the answer: the recommendation's last lines and the report written beside the records.
    html = tmp_path / "results" / "report" / "report.html"
    last = out.stdout.strip().splitlines()
    assert last[-1].endswith(str(html)) and "max_quality_loss=0.5" in last[-1] and html.is_file()
    chosen = next(line for line in last if line.startswith("RECOMMENDED: tiny torch int"))
    assert last.index(chosen) > last.index(next(line for line in last if "12 configurations" in line))
    assert "dominance check" in out.stdout and "<h2>tiny on machine" in html.read_text()
    frame = load_results(tmp_path / "results")
    assert len(frame) == 12
    ok = frame[frame.status == "ok"]
    assert sorted(ok.precision) == ["bf16", "fp32", "int4", "int8", "int8_dynamic"]
    assert (ok.torch_num_threads == 1).all() and (ok.backend == "torch").all()
    assert ok.eval_token_hash.nunique() == 1 and (ok.eval_tokens == ok.eval_tokens.iloc[0]).all()
    assert (ok.decode_tokens_per_s > 0).all() and (ok.peak_rss_bytes > 0).all()
    assert ok.set_index("precision").weight_bytes.idxmin() == "int4"
    assert {"env.cpu_model", "env.torch", "env.evalbench", "config.speed.new_tokens", "implementation"} <= set(frame)
    failed = frame[frame.status == "failed"]
    assert all("\n" not in e and e for e in failed.error)
    assert (failed.model == "tiny").all()
    bad_threads = failed[(failed.threads == 0) & (failed.precision != "int3")]
    assert len(bad_threads) == 5 and bad_threads.error.str.contains("threads=0 is invalid").all()
    bad_precision = failed[failed.precision == "int3"]
    assert len(bad_precision) == 2
    assert bad_precision.error.str.contains("Could not find 'precision/int3'.*fp32, int4, int8, int8_dynamic").all()


def test_single_run_bad_value_is_one_line_and_a_failed_record(tiny_args, tmp_path):
    out = evalbench("batch_size=0", *tiny_args, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == "evalbench: error: batch_size=0 is invalid; valid: an integer >= 1"
    frame = load_results(tmp_path / "results")
    assert frame.status.tolist() == ["failed"] and frame.error.tolist() == [
        "batch_size=0 is invalid; valid: an integer >= 1"
    ]
    assert "measured_pid" not in frame  # refused before anything was measured


def test_missing_model_path_names_it(tmp_path):
    out = evalbench("model=hub", "model.path=/nowhere/model", f"results_dir={tmp_path}", cwd=tmp_path)
    assert out.returncode == 1
    assert "model.path='/nowhere/model' does not exist" in out.stderr.strip().splitlines()[-1]


def test_perplexity_is_reused_across_batch_sizes(tiny_args, tmp_path):
    out = evalbench("-m", "precision=int8", "batch_size=1,2", *tiny_args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    frame = load_results(tmp_path / "results").sort_values("batch_size")
    first, second = frame.iloc[0], frame.iloc[1]
    assert first.perplexity_from_run is None or first.perplexity_from_run != first.perplexity_from_run  # None/NaN
    assert second.perplexity_from_run == first.run_id and second.perplexity == first.perplexity
    assert first.perplexity_peak_rss_bytes > 0 and pd.isna(second.perplexity_peak_rss_bytes)
    out = evalbench("precision=int8", "perplexity.reuse=false", *tiny_args, cwd=tmp_path)
    rerun = load_results(tmp_path / "results").sort_values("started_at").iloc[-1]
    assert out.returncode == 0 and rerun.perplexity == pytest.approx(first.perplexity, rel=1e-4)
    assert rerun.perplexity_time_s > 0


def test_sample_sweep_preset_lists_every_axis():
    from hydra import compose, initialize_config_dir

    from evalbench.cli import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["sweep=sample"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.precision.split(",") == [
        *("fp32", "bf16", "int8", "int4"),
        *("f32", "q8_0", "q4_0", "q4_k_m"),
        *("ort_fp32", "ort_int8", "ort_int4"),
    ]
    assert params.threads == "1,2" and params.batch_size == "1,4" and cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.model.name == "smollm2-135m" and cfg.perplexity.max_tokens > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "precision=int3",
            "Could not find 'precision/int3'; Available options in 'precision': bf16, f16, f32, fp32, int4, int8",
        ),
        ("threads=abc", "Error merging override threads=abc; Value 'abc' of type 'str' could not be converted"),
    ],
)
def test_single_run_composition_error_is_one_line_and_recorded(override, message, tiny_args, tmp_path):
    out = evalbench(override, *tiny_args, cwd=tmp_path)
    assert out.returncode == 1
    last_line = out.stderr.strip().splitlines()[-1]
    assert last_line.startswith("evalbench: error: ") and message in last_line
    frame = load_results(tmp_path / "results")
    assert frame.status.tolist() == ["failed"] and frame.model.tolist() == ["tiny"]
    assert message in frame.error.iloc[0]


def test_perplexity_is_not_reused_across_precision_settings(tiny_args, tmp_path):
    out = evalbench(
        "-m", "precision=int8_dynamic", "precision.reduce_range=weights,activations", *tiny_args, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    frame = load_results(tmp_path / "results")
    assert sorted(frame.reduce_range) == ["activations", "weights"]
    assert frame.perplexity_from_run.isna().all() and frame.perplexity.nunique() == 2


@pytest.mark.parametrize(
    ("results_dir", "reason"),
    [("a-file/results", "Not a directory"), ("a-file", "Not a directory"), ("/proc/x", "No such file or directory")],
)
def test_unwritable_results_dir_stops_with_one_line(results_dir, reason, tiny_args, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    target = results_dir if results_dir.startswith("/") else str(tmp_path / results_dir)
    args = [a for a in tiny_args if not a.startswith("results_dir=")] + [f"results_dir={target}"]
    for mode in ([], ["-m"]):
        out = evalbench(*mode, *args, cwd=tmp_path)
        assert out.returncode == 1
        assert out.stderr.strip().splitlines()[-1] == (
            f"evalbench: error: results_dir='{target}' is not writable ({reason}); valid: a folder you can write to"
        )
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_prompts_longer_than_the_data_are_one_line(tiny_args, tmp_path):
    out = evalbench(*tiny_args, "speed.prompt_tokens=4000000", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("evalbench: error: speed.prompt_tokens=4000000 is too many: the text has ")
    )


def test_print_config_runs_nothing_and_writes_nothing(tmp_path):
    out = evalbench("--cfg", "job", "precision=int4", f"results_dir={tmp_path / 'results'}", cwd=tmp_path)
    assert out.returncode == 0 and "_target_: evalbench.precision.int4.Int4WeightOnly" in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_one_sweep_spans_runtimes_and_each_precision_selects_its_backend(tiny_args, tmp_path):
    out = evalbench("-m", "precision=fp32,int4,f32,q8_0", *tiny_args, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 configurations, 4 ok, 0 failed" in out.stdout
    frame = load_results(tmp_path / "results").set_index("precision")
    assert frame.backend.to_dict() == {"fp32": "torch", "int4": "torch", "f32": "llama_cpp", "q8_0": "llama_cpp"}
    assert frame.eval_token_hash.nunique() == 1 and frame.reference_key.nunique() == 1
    assert frame.reference_computed.sum() == 1  # one stored reference, whatever backend scores against it
    assert frame.loc["f32", "perplexity"] == pytest.approx(frame.loc["fp32", "perplexity"], rel=1e-3)
    assert frame.loc["q8_0", "kld_mean"] > 0 and frame.weight_bits.to_dict()["q8_0"] == 8
    assert frame.loc["q8_0", "model_file_bytes"] < frame.loc["f32", "model_file_bytes"]
    assert (frame.loc[["f32", "q8_0"], "n_threads"] == 1).all()
    assert frame.backend_version["f32"].startswith("llama-cpp-python 0.3.36")


def test_a_precision_of_another_backend_is_one_line_naming_the_valid_ones(tiny_args, tmp_path):
    out = evalbench("backend=llama_cpp", "precision=int8_dynamic", *tiny_args, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "evalbench: error: precision=int8_dynamic is a torch precision, not a llama_cpp one; "
        "valid for llama_cpp: f16, f32, q4_0, q4_k_m, q4_k_s, q5_k_m, q6_k, q8_0"
    )


def test_an_export_the_model_builder_refuses_is_a_failed_record_with_its_message(tiny_args, tmp_path):
    out = evalbench("precision=ort_int4", *tiny_args, "backend.builder_options={shared_embeddings:true}", cwd=tmp_path)
    assert out.returncode == 1
    last_line = out.stderr.strip().splitlines()[-1]
    assert "model builder could not export" in last_line and "shared_embeddings=true" in last_line
    frame = load_results(tmp_path / "results")
    assert frame.status.tolist() == ["failed"] and frame.backend.tolist() == ["ort_genai"]
    assert frame.error.iloc[0] in last_line
