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
    # The sweep ends with the answer card and the report written beside the records, which also says how it was
    # chosen (the console leaves the trace to the report and to evalbench-report).
    html = tmp_path / "results" / "report" / "report.html"
    last = out.stdout.strip().splitlines()
    assert last[-1].endswith(str(html)) and "max_quality_loss=0.5" in last[-1] and html.is_file()
    chosen = next(line for line in last if line.startswith(("Recommended: PyTorch ", "Recommended (borderline: ")))
    assert last.index(chosen) > last.index(next(line for line in last if "12 configurations" in line))
    assert "dominance check" not in out.stdout and "<li>dominance check: " in html.read_text()
    assert "<h2>tiny on machine" in html.read_text()
    reproduce = next(line for line in last if line.lstrip().startswith("reproduce"))  # this run's values, no sweep
    assert "threads=1 " in reproduce and "threads=1,0" not in reproduce and "precision=fp32,bf16" not in reproduce
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


def test_the_sample_sweep_is_44_configurations_each_with_a_backend_that_runs_its_precision():
    from collections import Counter

    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from evalbench.cli import CONFIG_DIR
    from evalbench.runner import check_configuration

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        axes = compose("config", overrides=["sweep=sample"], return_hydra_config=True).hydra.sweeper.params
        parsed = OverridesParser.create().parse_overrides([f"{axis}={values}" for axis, values in axes.items()])
        batches = BasicSweeper.split_arguments(parsed, None)  # the sweeper's jobs
        jobs = [dict(override.split("=", 1) for override in job) for batch in batches for job in batch]
        runtime = {  # each precision composed selects its backend, which runs it (or this raises)
            name: check_configuration(compose("config", ["sweep=sample", f"precision={name}"])).backend.name
            for name in {job["precision"] for job in jobs}
        }
    assert len(jobs) == 56 and Counter(runtime[job["precision"]] for job in jobs) == {
        "torch": 16, "llama_cpp": 16, "ort_genai": 12, "openvino": 12,
    }  # fmt: skip


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


def test_a_list_of_prompt_tokens_times_decoding_after_each_depth(tiny_args, tiny_model_dir, tmp_path):
    """The first depth is the run's own figure (and roofline); each other is recorded in ``speed_at_depth``."""
    from transformers import AutoConfig

    from evalbench.metrics.bandwidth import kv_values_per_token

    out = evalbench(*tiny_args, "speed.prompt_tokens=[8,48]", "report.enabled=true", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    [run] = load_results(tmp_path / "results").to_dict("records")
    # The roofline reads the float32 KV cache at the first depth's mean context: 8 prompt tokens + 4 new / 2.
    kv_bytes = (8 + 4 / 2) * kv_values_per_token(AutoConfig.from_pretrained(tiny_model_dir)) * 4
    assert run["prompt_tokens"] == 8 and run["decode_kv_bytes_per_step"] == pytest.approx(kv_bytes)
    [deep] = run["speed_at_depth"]
    assert deep["prompt_tokens"] == 48 and deep["decode_tokens_per_s"] > 0
    page = (tmp_path / "results" / "report" / "report.html").read_text()
    assert "How much slower is decoding after a long context?" in page


@pytest.mark.parametrize("value", ["0", "[8,8]"])
def test_bad_prompt_tokens_are_one_line(value, tiny_args, tmp_path):
    out = evalbench(*tiny_args, f"speed.prompt_tokens={value}", cwd=tmp_path)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert last.startswith("evalbench: error: speed.prompt_tokens=") and "[128,2048]" in last, last


def test_print_config_runs_nothing_and_writes_nothing(tmp_path):
    out = evalbench("--cfg", "job", "precision=int4", f"results_dir={tmp_path / 'results'}", cwd=tmp_path)
    assert out.returncode == 0 and "_target_: evalbench.backends.torch.precision.int4.Int4WeightOnly" in out.stdout
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


_RAISING_JOB = """
import sys

import evalbench.cli
import evalbench.runner

where = sys.argv.pop(1)
module, name = (evalbench.runner, "run_configuration") if where == "run" else (evalbench.cli, "_job")
real = getattr(module, name)


def raising(cfg, *args):
    if cfg.batch_size == 2:
        raise RuntimeError("boom")
    return real(cfg, *args)


setattr(module, name, raising)
evalbench.cli.main()
"""


@pytest.mark.parametrize("where", ["run", "job"])  # inside the job's measuring call; out of the job altogether
def test_a_job_raising_an_unforeseen_error_is_its_failed_record_and_the_sweep_goes_on(where, tiny_args, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "raising_job.py"
    script.write_text(_RAISING_JOB)
    args = ["-m", "batch_size=2,1", *tiny_args, "report.enabled=true", "report.max_quality_loss=0.5"]
    out = subprocess.run([sys.executable, str(script), where, *args], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 1 and "hydra/launcher could not run" not in out.stderr, out.stderr
    assert "[failed] tiny torch fp32 threads=1 batch_size=2: RuntimeError: boom -> " in out.stdout
    assert "evalbench: 2 configurations, 1 ok, 1 failed;" in out.stdout
    assert (tmp_path / "results" / "report" / "report.html").is_file()  # the sweep's report, after the failure
    frame = load_results(tmp_path / "results").set_index("batch_size")
    assert frame.status.to_dict() == {1: "ok", 2: "failed"}
    assert frame.loc[2, "error"] == "RuntimeError: boom" and frame.loc[2, "error_type"] == "RuntimeError"
    assert frame.loc[2, "model"] == "tiny" and frame.loc[2, "env.machine_id"] == frame.loc[1, "env.machine_id"]


@pytest.mark.parametrize("mode", [[], ["-m"], ["hydra.job.chdir=false"]])  # checked first; by the sweeper; by the run
def test_a_required_value_left_unset_is_one_line_and_a_failed_record(mode, tmp_path):
    message = "model.path must be given for model=hub; e.g. model.path=HuggingFaceTB/SmolLM2-135M"
    out = evalbench(*mode, "model=hub", f"results_dir={tmp_path / 'results'}", "report.enabled=false", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout, out.stderr
    if mode == ["-m"]:
        assert f"[failed] model=hub results_dir={tmp_path / 'results'} report.enabled=False: {message}" in out.stdout
        assert "1 configurations, 0 ok, 1 failed" in out.stdout
    else:
        assert out.stderr.strip().splitlines()[-1] == f"evalbench: error: {message}"
    frame = load_results(tmp_path / "results")
    assert frame.status.tolist() == ["failed"] and frame.error.tolist() == [message]


def test_a_value_left_unset_in_a_group_and_an_interpolation_to_it_are_one_line(tiny_args, tmp_path):
    out = evalbench(*tiny_args, "+precision.scale=???", "+precision.alias=${.scale}", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "evalbench: error: precision.scale must be given for precision=fp32 (it is ??? there); "
        "valid: precision.scale=<a value> on the command line"
    )


@pytest.mark.parametrize("mode", [[], ["-m"]])
def test_a_list_for_a_config_group_is_one_line_not_a_merge(mode, tiny_args, tmp_path):
    message = (
        "precision=[fp32,int8] is a list, but a run takes one precision (Hydra would merge them into one); "
        "valid: precision=<one of: bf16, f16, f32, fp32, int4, int8, int8_dynamic, ort_fp32, ort_int4, ort_int8, "
        "ov_bf16, ov_fp32, ov_int4, ov_int8, q4_0, q4_k_m, q4_k_s, q5_k_m, q6_k, q8_0>, or -m precision=fp32,int8 to "
        "measure each"
    )
    out = evalbench(*mode, *tiny_args, "precision=[fp32,int8]", cwd=tmp_path)
    assert out.returncode == 1
    if mode:
        assert f"{message} -> " in out.stdout and "1 configurations, 0 ok, 1 failed" in out.stdout
    else:
        assert out.stderr.strip().splitlines()[-1] == f"evalbench: error: {message}"
    frame = load_results(tmp_path / "results")
    assert frame.status.tolist() == ["failed"] and frame.error.tolist() == [message]  # nothing measured


def test_the_last_of_a_repeated_results_dir_is_the_one_checked_and_used(tiny_args, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    args = [a for a in tiny_args if not a.startswith("results_dir=")]
    out = evalbench(*args, f"results_dir={tmp_path / 'ok'}", f"results_dir={tmp_path / 'a-file'}", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"evalbench: error: results_dir='{tmp_path / 'a-file'}' is not writable (Not a directory); "
        "valid: a folder you can write to"
    )
    assert not (tmp_path / "ok").exists()
    out = evalbench(*args, "perplexity.enabled=false", f"results_dir={tmp_path / 'a-file'}",
                    f"results_dir={tmp_path / 'ok'}", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert load_results(tmp_path / "ok").status.tolist() == ["ok"]


def test_a_data_file_in_another_encoding_is_one_line_and_a_failed_record(tiny_args, tmp_path):
    data = tmp_path / "data" / "wikitext-2-raw" / "wiki.test.raw"
    data.parent.mkdir(parents=True)
    data.write_bytes(" = Café = \n".encode("latin-1"))
    out = evalbench(*tiny_args, f"dataset.data_dir={tmp_path / 'data'}", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout
    message = (
        f"dataset file '{data}' is not UTF-8 text (byte 0xe9 at offset 6: invalid continuation byte); "
        "valid: a UTF-8 text file, e.g. converted with iconv -f <its encoding> -t utf-8"
    )
    assert out.stderr.strip().splitlines()[-1] == f"evalbench: error: {message}"
    assert load_results(tmp_path / "results").error.tolist() == [message]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("min_decode_tokens_per_s=20tok/s", "valid: min_decode_tokens_per_s=20 (tokens per second)"),
        ("max_memory_bytes=2GiB", "valid: max_memory_bytes=2147483648 (bytes)"),
        ("max_ttft_s=200ms", "valid: max_ttft_s=0.2 (seconds)"),
        ("max_quality_loss=1%", "valid: max_quality_loss=0.01 (a fraction: 0.01 = 1% worse than the baseline)"),
    ],
)
def test_a_report_target_written_with_a_unit_is_one_line(target, message, tmp_path):
    from conftest import run_cli

    from evalbench.results import write_record

    write_record(tmp_path / "results", {"run_id": "a", "status": "ok", "model": "m", "precision": "fp32"})
    out = run_cli(f"results_dir={tmp_path / 'results'}", target, cwd=tmp_path, program="evalbench-report")
    assert out.returncode == 1
    line = f"evalbench-report: error: {target} is invalid: targets take no unit; {message}"
    assert out.stderr.strip().splitlines() == [line]


def test_a_presets_sweep_given_a_list_without_m_is_left_to_the_sweeper(tmp_path):
    """``sweep=sample precision=fp32,int8``: the preset makes it a multirun, so the list is a sweep; checking it as
    one run's value used to end in a traceback."""
    from evalbench.cli import _check_single_run

    _check_single_run(["sweep=sample", "precision=fp32,int8", f"results_dir={tmp_path}"])
    assert not list(tmp_path.glob("records/*.json"))  # nothing recorded: the sweeper checks each job
    with pytest.raises(SystemExit):  # one run's bad value: still refused before Hydra starts, as a record
        _check_single_run(["precision=int3", f"results_dir={tmp_path}"])
    assert len(list(tmp_path.glob("records/*.json"))) == 1
