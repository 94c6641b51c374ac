"""The OpenVINO backend on tiny random-weight models: optimum-intel's export, NNCF's compression, log-probs
against torch, batched decoding in evalbench's loop, the plugin's settings read back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import check_batched_generation, tiny_checkpoint

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from evalbench.backends.openvino.backend import OpenVinoBackend
from evalbench.backends.openvino.config import OpenVinoConfig
from evalbench.backends.openvino.exporter import exporter_python
from evalbench.backends.openvino.precision import OpenVinoPrecision
from evalbench.backends.torch.backend import forward_log_probs as torch_log_probs
from evalbench.calibration.base import AWQ
from evalbench.config import ModelConfig
from evalbench.errors import EvalbenchError, PrecisionError


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(scope="module", autouse=True)
def exporter() -> None:
    """The exporter environment of the suite's cache, made once for every test (the end-to-end sweep's too)."""
    EXPORTER.append(str(exporter_python(Path(os.environ["EVALBENCH_CACHE_DIR"]))))


EXPORTER: list[str] = []


def built(model_dir, cache_dir, precision="ov_fp32", calibration=None, config=None, **fields) -> OpenVinoBackend:
    backend = (config or OpenVinoConfig(exporter_python=EXPORTER[-1])).build(
        OpenVinoPrecision(precision, **fields), ModelConfig(name="tiny", path=str(model_dir)), cache_dir,
        calibration=calibration,
    )  # fmt: skip
    assert isinstance(backend, OpenVinoBackend)
    return backend


def loaded(model_dir, tokenizer, cache_dir, precision="ov_fp32", **fields) -> OpenVinoBackend:
    backend = built(model_dir, cache_dir, precision, **fields)
    backend.load(tokenizer)
    backend.set_threads(1)
    return backend


def test_fp32_log_probs_match_torch_and_compression_orders_the_error(
    tiny_model_dir, tiny_tokenizer, tiny_model, cache_dir, window
):
    reference = torch_log_probs(tiny_model, window)
    errors, sizes = {}, {}
    for name in ("ov_fp32", "ov_int8", "ov_int4"):
        backend = loaded(tiny_model_dir, tiny_tokenizer, cache_dir, name)
        ours = backend.log_probs(window)
        assert ours.shape == (len(window), len(tiny_tokenizer)) and ours.dtype == torch.float32
        errors[name] = (ours - reference).abs().mean().item()
        sizes[name] = backend.weight_bytes()
        if name == "ov_fp32":
            assert (ours - reference).abs().max() < 1e-4  # f32 inference: the checkpoint's numbers
            assert torch.allclose(backend.log_probs(window[:50]), ours[:50], atol=1e-5)  # nothing before the window
        backend.close()
    assert errors["ov_fp32"] < 1e-5 < errors["ov_int8"] < errors["ov_int4"] < 0.2, errors
    assert sizes["ov_int4"] < sizes["ov_int8"] < sizes["ov_fp32"] / 3, sizes


def test_generation_is_torchs_greedy_decoding_row_by_row(tiny_model_dir, tiny_tokenizer, tiny_model, cache_dir, window):
    backend = loaded(tiny_model_dir, tiny_tokenizer, cache_dir)
    prompts = window[:60].reshape(3, 20)
    assert "ov_generation_compile_time_s" in backend.prepare_generation(prompts, 12, True)
    together = check_batched_generation(backend, prompts, 12)
    for row in range(3):
        continued = torch.cat([prompts[row], together[row]])
        with torch.inference_mode():
            logits = tiny_model(input_ids=continued[None]).logits[0, 19:-1]
        assert torch.equal(logits.argmax(-1), together[row])  # each token torch's greedy one given those before
    assert backend.log_probs(window[:40]).shape == (40, len(tiny_tokenizer))  # scoring again after generating
    backend.close()


def test_settings_are_read_back_and_bytes_per_step_count_the_untied_table_once(
    tiny_model_dir, tiny_tokenizer, cache_dir
):
    config = OpenVinoConfig(kv_cache_precision="f32", dynamic_quantization_group_size=0, exporter_python=EXPORTER[-1])
    backend = built(tiny_model_dir, cache_dir, "ov_int8", config=config)
    fields = backend.load(tiny_tokenizer)
    settings = backend.set_threads(2)
    assert settings == {
        "ov_inference_num_threads": 2,
        "ov_inference_precision": "f32",
        "ov_kv_cache_precision": "f32",
        "ov_dynamic_quantization_group_size": 0,
    }
    assert backend.set_threads(1)["ov_inference_num_threads"] == 1
    assert fields["ov_compression"] == {"mode": "INT8_ASYM"} and fields["ov_exporter"].startswith("optimum-intel 2.2")
    assert 0 < backend.lookup_bytes < backend.weight_bytes() <= fields["model_file_bytes"]
    step = backend.decode_bytes_per_step(3, 100)
    vocab = len(tiny_tokenizer)
    assert step["weights"] == pytest.approx(backend.weight_bytes() - backend.lookup_bytes * (1 - 3 / vocab))
    assert step["kv_cache"] == 3 * 100 * 2 * 2 * 2 * 16 * 4  # K and V, 2 layers, 2 KV heads of 16, f32
    again = built(tiny_model_dir, cache_dir, "ov_int8", config=config).load(tiny_tokenizer)  # cached
    assert again["model_file"] == fields["model_file"] and again["convert_time_s"] == fields["convert_time_s"]
    backend.close()


def test_awq_writes_its_own_ir_keyed_by_its_tokens(tiny_model_dir, tiny_tokenizer, cache_dir, window):
    plain = loaded(tiny_model_dir, tiny_tokenizer, cache_dir, "ov_int4")
    calibration = AWQ(samples=2, sequence_length=64)
    calibration.set_tokens(window[-128:], overlaps_scored=False)
    backend = built(tiny_model_dir, cache_dir, "ov_int4", calibration=calibration)
    fields = backend.load(tiny_tokenizer)
    assert fields["calibration_tokens"] == 128 and fields["calibration_overlaps_scored"] is False
    assert backend.folder != plain.folder
    assert not torch.equal(backend.log_probs(window[:64]), plain.log_probs(window[:64]))  # other weights
    other = AWQ(samples=2, sequence_length=64)
    other.set_tokens(window[-256:-128], overlaps_scored=False)
    assert other.key() != calibration.key()  # other tokens, another IR


def test_a_second_architecture_exports_and_matches_torch(tmp_path_factory, bpe_tokenizer_dir, cache_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_checkpoint(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2", bpe_tokenizer_dir, torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    backend = loaded(folder, tokenizer, cache_dir)
    window = torch.arange(3, 83) % len(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert (backend.log_probs(window) - torch_log_probs(model, window)).abs().max() < 1e-4
    backend.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "ov_int2"}, r"precision.name='ov_int2' is not an OpenVINO type; valid: \['ov_fp32'"),
        ({"name": "ov_int4", "group_size": 0}, r"precision.group_size=0 is invalid; valid: a positive divisor"),
        ({"name": "ov_int4", "ratio": 1.5}, r"precision.ratio=1.5 is invalid; valid: a number in \(0, 1\]"),
        ({"name": "ov_int4", "backup": "fp8"}, r"precision.backup='fp8' is invalid; valid: \['int8_asym'"),
    ],
)
def test_bad_precision_values_are_one_line(fields, message):
    with pytest.raises(PrecisionError, match=message):
        OpenVinoPrecision(**fields)


def test_bad_backend_values_are_one_line():
    with pytest.raises(EvalbenchError, match=r"backend.kv_cache_precision='q8' is invalid; valid: null"):
        OpenVinoConfig(kv_cache_precision="q8")
    with pytest.raises(EvalbenchError, match=r"dynamic_quantization_group_size=-1 is invalid; valid: null"):
        OpenVinoConfig(dynamic_quantization_group_size=-1)


def test_int4_records_its_nncf_arguments_and_a_group_size_that_does_not_divide_is_one_line(
    tiny_model_dir, tiny_tokenizer, cache_dir
):
    precision = OpenVinoPrecision("ov_int4", group_size=48, symmetric=False, ratio=0.5, backup="none")
    assert precision.compression() == {"mode": "INT4_ASYM", "group_size": 48, "ratio": 0.5, "backup_mode": "none"}
    assert precision.describe()["scheme"] == "nncf_int4_asym_group48_ratio0.5_backup_none"
    with pytest.raises(EvalbenchError, match=r"NNCF could not compress the weights at precision=ov_int4: ") as error:
        built(tiny_model_dir, cache_dir, "ov_int4", group_size=48).load(tiny_tokenizer)  # 64 % 48 != 0
    assert "\n" not in str(error.value)


def test_bf16_runs_only_where_the_cpu_plugin_computes_bf16():
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    precision = OpenVinoPrecision("ov_bf16")
    assert precision.inference_precision == "bf16" and precision.weight_bits == 16
    if "BF16" in capabilities:
        precision.check_supported()  # a CPU with AVX512_BF16 or AMX runs it
    else:
        with pytest.raises(PrecisionError, match=r"^precision=ov_bf16 needs a CPU OpenVINO computes bf16 on .*"):
            precision.check_supported()
