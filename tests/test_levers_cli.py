"""The levers as sweep axes through the CLI on the tiny Llama: pruning, the KV cache, affinity, the memory check."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch
from conftest import FAST, evalbench
from hydra import compose, initialize_config_dir
from transformers import AutoConfig, LlamaConfig

from evalbench import load_results
from evalbench.affinity import bound, core_cpus, physical_cores
from evalbench.config import CONFIG_DIR, register_configs
from evalbench.configuration import named_configuration
from evalbench.errors import EvalbenchError
from evalbench.metrics import memory_estimate
from evalbench.metrics.memory import peak_rss_bytes, reset_peak_rss
from evalbench.runner import run_configuration


def test_pruning_is_an_axis_of_torch_and_refused_elsewhere(tiny_args, tmp_path):
    out = evalbench("-m", "pruning=none,magnitude,structured", "precision=fp32,q8_0", *tiny_args, cwd=tmp_path)
    assert out.returncode == 1 and "6 configurations, 4 ok, 2 failed" in out.stdout, out.stdout + out.stderr
    frame = load_results(tmp_path / "results")
    failed = frame[frame.status == "failed"]
    assert set(failed.precision) == {"q8_0"} and set(failed.pruning_method) == {"magnitude", "structured"}
    assert failed.error.str.startswith("pruning=").all() and failed.error.str.contains("valid: pruning=none").all()
    torch_runs = frame[frame.backend == "torch"].set_index("pruning_method")
    assert torch_runs.loc["magnitude", "pruning_zeroed_parameters"] > 0
    assert torch_runs.loc["structured", "parameters"] < torch_runs.loc["none", "parameters"]
    assert torch_runs.loc["structured", "parameters"] == (
        torch_runs.loc["none", "parameters"] - torch_runs.loc["structured", "pruning_removed_parameters"]
    )
    for method in ("magnitude", "structured"):  # scored against the unpruned fp32 reference
        assert torch_runs.loc[method, "kld_mean"] > 0
        assert torch_runs.loc[method, "perplexity"] != pytest.approx(torch_runs.loc["none", "perplexity"], rel=1e-6)


def test_kv_cache_off_is_torch_only_and_recorded(tiny_args, tmp_path):
    out = evalbench("-m", "speed.kv_cache=true,false", "precision=fp32,f32", *tiny_args, cwd=tmp_path)
    assert out.returncode == 1 and "4 configurations, 3 ok, 1 failed" in out.stdout, out.stdout + out.stderr
    frame = load_results(tmp_path / "results")
    failed = frame[frame.status == "failed"]
    assert failed[["precision", "kv_cache"]].values.tolist() == [["f32", False]]
    assert failed.error.iloc[0].startswith("speed.kv_cache=false is not offered by backend=llama_cpp")
    off = frame[(frame.backend == "torch") & ~frame.kv_cache.astype(bool)]
    assert len(off) == 1 and off.decode_kv_bytes_per_step.iloc[0] == 0


def test_a_precision_that_cannot_compile_fails_with_the_compilers_first_line(tiny_args, tmp_path):
    out = evalbench("precision=int8_dynamic", "backend.compile=true", *tiny_args, cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "evalbench: error: backend.compile=true: torch.compile cannot compile precision=int8_dynamic: "
    )
    assert last.endswith("valid: backend.compile=false, or another precision")
    frame = load_results(tmp_path / "results")
    assert frame.status.tolist() == ["failed"] and pd.isna(frame.iloc[0].get("perplexity"))  # failed first


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_affinity_binds_every_thread_and_restores_the_mask():
    before = os.sched_getaffinity(0)
    with bound("cores", 1) as fields:
        assert fields["affinity_cpus"] == [physical_cores()[0][0]]
        for task in os.listdir("/proc/self/task"):
            assert os.sched_getaffinity(int(task)) == {fields["affinity_cpus"][0]}
    assert os.sched_getaffinity(0) == before


def test_affinity_beyond_the_physical_cores_is_one_line():
    cores = len(physical_cores())
    with pytest.raises(EvalbenchError, match=rf"threads={cores + 1}: this machine offers {cores} physical cores"):
        core_cpus(cores + 1)


def _config(tiny_model_dir, tmp_path, *overrides: str):
    register_configs()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "config",
            overrides=["model=hub", f"model.path={tiny_model_dir}", "model.name=tiny",
                       f"results_dir={tmp_path / 'results'}", *FAST, *overrides],
        )  # fmt: skip


def test_a_configuration_that_would_not_fit_fails_before_loading(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(memory_estimate, "available_bytes", lambda: 2**20)
    monkeypatch.setattr("evalbench.runner.available_bytes", lambda: 2**20)
    record = run_configuration(_config(tiny_model_dir, tmp_path, "speed.enabled=false"))
    assert record["status"] == "failed" and "load_time_s" not in record  # refused before loading
    assert record["error"].startswith(
        f"this configuration needs an estimated {record['memory_estimate_bytes'] / 2**30:.2f} GiB"
    )
    assert "but 0.00 GiB is available" in record["error"]
    checked_off = run_configuration(_config(tiny_model_dir, tmp_path, "speed.enabled=false", "memory_check=false"))
    assert (
        checked_off["status"] == "ok" and checked_off["memory_estimate_bytes"] > checked_off["memory_available_bytes"]
    )


def test_the_estimate_counts_the_models_parameters(tiny_model, tiny_model_dir):
    config = AutoConfig.from_pretrained(tiny_model_dir)
    shape = memory_estimate.ModelShape.of(config, torch.float32, gguf_source=False)  # from the config alone
    assert shape.parameters == sum(p.numel() for p in tiny_model.parameters())
    embedding = tiny_model.get_input_embeddings().weight.numel()
    tied = tiny_model.get_output_embeddings().weight is tiny_model.get_input_embeddings().weight
    assert shape.embedding_parameters == embedding * (1 if tied else 2)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_estimate_covers_the_memory_a_run_takes(precision, tiny_model_dir, tmp_path):
    """The recorded estimate is at or above what loading, converting, scoring and generating added to the
    process's resident memory, on a model whose weights (13M parameters, 50 MiB in float32) set the peak."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "model"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.save_pretrained(folder)
    shape = {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 4, "num_attention_heads": 8}
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), num_key_value_heads=4, **shape)).save_pretrained(folder)
    # The same precision on the tiny model first: what its first use imports is not the configuration's.
    assert run_configuration(_config(tiny_model_dir, tmp_path / "first", f"precision={precision}"))["status"] == "ok"
    if not reset_peak_rss():
        pytest.skip("the peak resident memory cannot be reset here")
    before = peak_rss_bytes()  # just reset: the resident memory now
    # Without the machine probe, whose buffer is no part of the configuration.
    record = run_configuration(_config(folder, tmp_path, f"precision={precision}", "speed.machine_probe=false"))
    assert record["status"] == "ok", record["error"]
    peak = max(record[field] for field in ("load_peak_rss_bytes", "perplexity_peak_rss_bytes", "peak_rss_bytes"))
    process = record["memory_estimate_parts"]["process"]  # what the process held when the estimate was made
    # Up to 1% over: the allocator's slack (freed pages it keeps, per-thread arenas), no part of the model's.
    assert before <= process + 2**25 and peak <= 1.01 * record["memory_estimate_bytes"]


LLAMA_2_7B = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, max_position_embeddings=4096)  # fmt: skip


def test_each_runtime_estimates_what_it_holds_of_a_7b_model():
    """A Llama-2-7B-shaped bf16 checkpoint (config only) on a 21 GiB budget: torch fp32 is refused with torch's
    own figure; bf16 (one 13 GiB copy, no float32 one) and llama.cpp's mapped GGUFs fit, q4_k_m in about 5.5 GiB."""
    shape = memory_estimate.ModelShape.of(LLAMA_2_7B, torch.bfloat16, gguf_source=False)
    assert 6.7e9 < shape.parameters < 6.8e9 and shape.checkpoint_bytes == 2
    workload = memory_estimate.Workload(batch_size=1, sequence_tokens=160, window=512)
    needed = {name: named_configuration(name).memory_needed(shape, workload) for name in
              ("fp32", "bf16", "int8", "q8_0", "q4_k_m", "ort_int4")}  # fmt: skip
    gib = {name: estimate.total / 2**30 for name, estimate in needed.items()}
    assert 12.5 < gib["bf16"] < 13.5  # the checkpoint's own bf16 weights, nothing else
    assert 37.5 < gib["fp32"] < 39.5  # float32 weights beside the bf16 pages they are cast from
    assert gib["bf16"] < gib["int8"] < gib["fp32"]  # int8 is made from the bf16 weights, beside them
    assert 7 < gib["q8_0"] < 9 and 4 < gib["q4_k_m"] < 6 and gib["q4_k_m"] < gib["q8_0"]  # 7.2 and 4.4 GiB files
    assert needed["ort_int4"].conversion and sum(needed["ort_int4"].conversion.values()) > 2 * shape.parameters
    budget = 21 * 2**30
    with pytest.raises(EvalbenchError, match=r"needs an estimated 3\d\.\d\d GiB \(torch: this process 0\.00"):
        memory_estimate.check_fits(needed["fp32"], budget)
    for name in ("bf16", "q8_0", "q4_k_m"):
        memory_estimate.check_fits(needed[name], budget)  # fits: no error
