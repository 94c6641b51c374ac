"""Distribution metrics and lm-eval tasks through the evalbench command, on the tiny random-weight model."""

from __future__ import annotations

from pathlib import Path

import lm_eval
import pandas as pd
import pytest
import torch
import yaml
from conftest import DATA_DIR, FAST, evalbench, tiny_checkpoint

from evalbench import load_results, recommend
from evalbench.quality.tasks import TaskError, _resolve, local_task_config

DATA_SOURCE_KEYS = {"dataset_path", "dataset_name", "dataset_kwargs", "tag"}


def test_reference_is_computed_once_across_a_multirun(tiny_args, tmp_path):
    # int8 runs first: it must build the reference from the FP32 model before converting it.
    out = evalbench("-m", "precision=int8,fp32,int4", "threads=1,2", "perplexity.reuse=false", *tiny_args, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    frame = load_results(tmp_path / "results").set_index(["precision", "threads"])
    assert len(frame) == 6 and (frame.perplexity_from_run.isna()).all()  # every run scored its own tokens
    assert frame.reference_computed.sum() == 1
    assert frame.loc[("int8", 1), "reference_computed"]
    assert frame.reference_key.nunique() == 1 and frame.reference_from_run.nunique() == 1
    assert len(list((tmp_path / "results" / "quality_cache" / "references").glob("*.safetensors"))) == 1
    fp32, int4 = frame.loc["fp32"], frame.loc["int4"]
    assert (fp32.kld_mean < 1e-6).all() and (fp32.same_top_rate == 100).all()
    assert (fp32.ppl_ratio_ci_low <= 1 + 1e-6).all() and (fp32.ppl_ratio_ci_high >= 1 - 1e-6).all()
    assert (int4.kld_mean > fp32.kld_mean.max()).all() and (int4.same_top_rate < 100).all()
    expected = frame.loc[("int4", 1), "perplexity"] / frame.loc[("fp32", 1), "perplexity"]
    assert frame.loc[("int4", 1), "ppl_ratio"] == pytest.approx(expected, rel=1e-6)


def test_another_reference_precision_is_built_by_its_own_configuration(tiny_args, tmp_path):
    out = evalbench("-m", "precision=int8,bf16", "quality.reference=bf16", "isolation=none", *tiny_args, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    frame = load_results(tmp_path / "results").set_index("precision")
    assert (frame.reference_precision == "bf16").all() and frame.reference_computed.sum() == 1
    assert frame.loc["int8", "reference_computed"]  # built by the int8 run, before converting to int8
    assert (frame.reference_configuration == "torch bf16").all() and (frame.reference_backend == "torch").all()
    assert frame.reference_is_this_run.tolist() == [False, True] and frame.loc["bf16", "load_dtype"] == "bfloat16"
    assert frame.loc["int8", "weight_bytes"] < frame.loc["bf16", "weight_bytes"]  # int8 still converted its own
    assert frame.loc["bf16", "kld_mean"] == 0 and frame.loc["bf16", "same_top_rate"] == 100
    assert frame.loc["int8", "kld_mean"] > 0


def test_a_reference_from_another_runtime_is_the_baseline_and_scores_once(tiny_args, tmp_path):
    """quality.reference=f32: llama.cpp builds the reference in the f32 run's own scoring pass; torch fp32 is
    compared with it; the recommendation's baseline follows the reference."""
    out = evalbench("-m", "precision=f32,q8_0,fp32", "quality.reference=f32", *tiny_args, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    frame = load_results(tmp_path / "results").set_index("precision")
    assert (frame.reference_configuration == "llama_cpp f32").all() and frame.reference_key.nunique() == 1
    assert frame.reference_is_this_run.to_dict() == {"f32": True, "q8_0": False, "fp32": False}
    assert frame.loc["f32", "reference_computed"] and frame.reference_computed.sum() == 1  # one pass built it
    assert frame.loc["f32", "kld_mean"] == 0 and frame.loc["q8_0", "kld_mean"] > frame.loc["fp32", "kld_mean"] > 0
    trace = recommend(frame.reset_index(), max_quality_loss=0.5).trace
    baseline = next(step for step in trace if step.name == "baseline")
    assert baseline.outcome == "llama_cpp f32" and "was not measured" not in baseline.reason


def test_the_default_reference_is_the_checkpoints_own_precision(tmp_path, spm_tokenizer_dir):
    """A bf16 checkpoint: quality.reference=auto is torch bf16, which loads no float32 copy and scores once."""
    folder = tiny_checkpoint(tmp_path / "bf16-model", "qwen2", spm_tokenizer_dir, torch.bfloat16)
    args = ["model=hub", f"model.path={folder}", "model.name=tiny-qwen2", f"results_dir={tmp_path / 'results'}"]
    out = evalbench("-m", "precision=bf16,int8", *args, *FAST, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    frame = load_results(tmp_path / "results").set_index("precision")
    assert (frame.reference_configuration == "torch bf16").all()
    assert frame.loc["bf16", "reference_is_this_run"] and frame.loc["bf16", "reference_computed"]
    assert frame.loc["bf16", "kld_mean"] == 0 and frame.loc["int8", "kld_mean"] > 0
    assert (frame.load_dtype == "bfloat16").all()


def test_no_reference_means_no_distribution_metrics(tiny_args, tmp_path):
    out = evalbench("precision=int8", "quality.reference=null", *tiny_args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    row = load_results(tmp_path / "results").iloc[0]
    assert row.perplexity > 0 and "kld_mean" not in row.index
    assert not (tmp_path / "results" / "quality_cache" / "references").exists()


def test_unknown_reference_precision_is_one_line(tiny_args, tmp_path):
    out = evalbench("quality.reference=fp16", *tiny_args, cwd=tmp_path)
    assert out.returncode == 1
    assert "quality.reference=fp16 is invalid; valid: auto (the model's own precision), null, or a" in out.stderr
    assert ", f16, f32, fp32, " in out.stderr and ", q8_0" in out.stderr


def test_shipped_lambada_matches_lm_evals_own_task_but_for_the_data_source():
    stock = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks/lambada/lambada_openai.yaml").read_text())
    local = local_task_config("lambada_openai")
    assert {k: v for k, v in local.items() if k not in DATA_SOURCE_KEYS} == {
        k: v for k, v in stock.items() if k not in DATA_SOURCE_KEYS
    }
    assert local["dataset_path"] == "json"


def test_task_names_resolve_to_local_data_or_clear_errors(tmp_path):
    local = _resolve("lambada_openai", str(DATA_DIR))
    assert local.source == f"local:{(DATA_DIR / 'lambada_openai/lambada_test.jsonl').resolve()}"
    assert local.spec["dataset_kwargs"]["data_files"]["test"] == str(local.data_files[0])
    with pytest.raises(TaskError, match=r"lambada_openai needs lambada_openai/lambada_test.jsonl .* while offline"):
        _resolve("lambada_openai", str(tmp_path))
    with pytest.raises(TaskError, match=r"unknown lm-eval task 'lambada_opneai'; close: \['lambada_openai'"):
        _resolve("lambada_opneai", str(DATA_DIR))
    assert _resolve("hellaswag", str(DATA_DIR)).source == "lm-eval"  # a stock task: loaded from the hub online


def test_tasks_run_on_the_converted_model_and_bad_tasks_keep_the_other_measurements(tiny_args, tmp_path):
    out = evalbench(
        "-m",
        "precision=fp32,int4",
        "quality.tasks=[lambada_openai,nosuchtask]",
        "quality.limit=6",
        "quality.batch_size=3",
        *tiny_args,
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "2 configurations, 0 ok, 0 failed, 2 with a failed quality metric" in out.stdout
    assert "quality metric failed: quality.tasks: unknown lm-eval task 'nosuchtask'" in out.stdout
    frame = load_results(tmp_path / "results").set_index("precision")
    assert (frame.status == "ok").all() and (frame.perplexity > 0).all() and (frame.decode_tokens_per_s > 0).all()
    assert frame["task.nosuchtask.error"].str.startswith("quality.tasks: unknown lm-eval task").all()
    assert (frame["task.lambada_openai.samples"] == 6).all() and (frame["task.lambada_openai.limit"] == 6).all()
    assert frame["task.lambada_openai.source"].str.startswith("local:").all()
    for precision in ("fp32", "int4"):
        acc, stderr = frame.loc[precision, ["task.lambada_openai.acc", "task.lambada_openai.acc_stderr"]]
        assert acc in {i / 6 for i in range(7)} and stderr >= 0
        assert frame.loc[precision, "task.lambada_openai.perplexity"] > 1
    # each precision scored its own model: a random-weight model's int4 copy gives another task perplexity
    assert frame.loc["fp32", "task.lambada_openai.perplexity"] != frame.loc["int4", "task.lambada_openai.perplexity"]


def test_task_data_missing_offline_is_a_failed_metric_and_exit_1(tiny_args, tmp_path):
    out = evalbench(
        "quality.tasks=[lambada_openai]", f"quality.data_dir={tmp_path / 'empty'}", *tiny_args, cwd=tmp_path
    )
    assert out.returncode == 1
    assert "evalbench: error: quality.tasks: lambada_openai needs lambada_openai/lambada_test.jsonl" in out.stderr
    row = load_results(tmp_path / "results").iloc[0]
    assert row.status == "ok" and row.perplexity > 0 and row.decode_tokens_per_s > 0
    assert "task.lambada_openai.acc" not in row.index


def test_a_failed_task_runs_again_on_resume_and_the_rest_is_kept(tiny_args, tmp_path):
    data = tmp_path / "data"
    args = ["quality.tasks=[lambada_openai]", "quality.limit=4", f"quality.data_dir={data}", *tiny_args]
    first = evalbench(*args, cwd=tmp_path)
    assert first.returncode == 1 and "lambada_openai needs lambada_openai/lambada_test.jsonl" in first.stderr
    before = load_results(tmp_path / "results").iloc[0]
    (data / "lambada_openai").mkdir(parents=True)  # the data arrives; the same command resumes the sweep
    (data / "lambada_openai" / "lambada_test.jsonl").symlink_to(DATA_DIR / "lambada_openai" / "lambada_test.jsonl")
    again = evalbench(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[tasks retried] tiny" in again.stdout
    after = load_results(tmp_path / "results")
    assert len(after) == 1  # the same record, completed, not a second one
    row = after.iloc[0]
    assert row.run_id == before.run_id and row.decode_tokens_per_s == before.decode_tokens_per_s
    assert row.perplexity == before.perplexity and row["task.lambada_openai.samples"] == 4
    assert "task.lambada_openai.error" not in after or pd.isna(row["task.lambada_openai.error"])
    assert not isinstance(row.get("quality_errors"), list) or row.quality_errors == []


@pytest.mark.parametrize(
    ("dtype", "fits", "expected"),
    [
        (torch.bfloat16, set(), "bf16"),  # the checkpoint's own: refused later, in one line, if it does not fit
        (torch.float32, {"fp32"}, "fp32"),
        (torch.float16, {"fp32", "f16"}, "fp32"),  # float16 upcast exactly
        (torch.float16, {"f16"}, "f16"),  # else llama.cpp at the checkpoint's own f16
    ],
)
def test_the_auto_reference_is_the_checkpoints_dtype(dtype, fits, expected, tmp_path, spm_tokenizer_dir):
    from evalbench.config import ModelConfig
    from evalbench.configuration import reference_name

    folder = tiny_checkpoint(tmp_path / "model", "llama", spm_tokenizer_dir, dtype)
    model = ModelConfig(name="tiny", path=str(folder))
    assert reference_name("auto", model, tmp_path / "cache", lambda name: name in fits) == expected


def test_a_gguf_sources_auto_reference_is_its_dequantized_weights_when_they_fit(tmp_path):
    from omegaconf import OmegaConf

    from evalbench.config import CONFIG_DIR
    from evalbench.configuration import reference_name

    sample = OmegaConf.load(CONFIG_DIR / "model" / "smollm2-135m.yaml")
    assert reference_name("auto", sample, tmp_path, lambda name: True) == "fp32"
    assert reference_name("auto", sample, tmp_path, lambda name: name != "fp32") == "f16"
