"""The ONNX Runtime GenAI backend on the tiny Llama: builder exports, log-probs against torch, batched decoding."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import check_batched_generation

pytest.importorskip("onnxruntime_genai")

from evalbench.backends.ort_genai.backend import OrtGenaiBackend
from evalbench.backends.ort_genai.config import OrtGenaiConfig
from evalbench.backends.ort_genai.precision import OnnxPrecision
from evalbench.backends.torch.backend import forward_log_probs as torch_log_probs
from evalbench.config import ModelConfig
from evalbench.errors import EvalbenchError, PrecisionError


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ort-genai-cache")


@pytest.fixture(scope="module")
def tied_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with its output head tied to the embedding, as the sample model's is."""
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = True
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("tied")
    LlamaForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, folder / name)
    return folder


def built(model_dir, cache_dir, precision: str = "ort_fp32", builder_options=None, **fields) -> OrtGenaiBackend:
    backend = OrtGenaiConfig(builder_options=builder_options or {}).build(
        OnnxPrecision(precision, **fields), ModelConfig(name="tiny", path=str(model_dir)), cache_dir
    )
    assert isinstance(backend, OrtGenaiBackend)
    return backend


def loaded(model_dir, tokenizer, cache_dir, precision: str = "ort_fp32", **fields) -> OrtGenaiBackend:
    backend = built(model_dir, cache_dir, precision, **fields)
    backend.load(tokenizer)
    backend.set_threads(1)  # no spinning thread pools on a busy shared machine
    return backend


def test_fp32_log_probs_match_torch(tiny_model_dir, tiny_tokenizer, tiny_model, cache_dir, window):
    backend = loaded(tiny_model_dir, tiny_tokenizer, cache_dir)
    ours = backend.log_probs(window)
    assert ours.shape == (len(window), len(tiny_tokenizer)) and ours.dtype == torch.float32
    assert (ours - torch_log_probs(tiny_model, window)).abs().max() < 1e-5
    assert torch.equal(backend.log_probs(window), ours)  # a fresh sequence each call
    assert torch.allclose(backend.log_probs(window[:50]), ours[:50], atol=1e-5)  # nothing before the window
    backend.close()


def test_quantized_precisions_are_close_but_not_exact(tiny_model_dir, tiny_tokenizer, tiny_model, cache_dir, window):
    reference = torch_log_probs(tiny_model, window)
    errors, sizes = {}, {}
    for name in ("ort_fp32", "ort_int8", "ort_int4"):
        backend = loaded(tiny_model_dir, tiny_tokenizer, cache_dir, name)
        errors[name] = (backend.log_probs(window) - reference).abs().mean().item()
        sizes[name] = backend.weight_bytes()
        backend.close()
    assert errors["ort_fp32"] < 1e-6 < errors["ort_int8"] < errors["ort_int4"] < 0.1, errors
    assert sizes["ort_int4"] < sizes["ort_int8"] < sizes["ort_fp32"], sizes


def test_generate_batches_different_prompts(tiny_model_dir, tiny_tokenizer, tiny_model, cache_dir, window):
    backend = loaded(tiny_model_dir, tiny_tokenizer, cache_dir)
    prompts = window[:60].reshape(3, 20)
    together = check_batched_generation(backend, prompts, 12)
    for row in range(3):
        continued = torch.cat([prompts[row], together[row]])
        with torch.inference_mode():
            logits = tiny_model(input_ids=continued[None]).logits[0, 19:-1].clone()
            logits[:, tiny_tokenizer.eos_token_id] = -torch.inf  # min_length masks EOS, as torch's min_new_tokens does
        assert torch.equal(logits.argmax(-1), together[row])  # each token is torch's greedy one given those before
    backend.close()


def test_quantized_batch_rows_decode_as_alone(tiny_model_dir, tiny_tokenizer, cache_dir, window):
    backend = loaded(tiny_model_dir, tiny_tokenizer, cache_dir, "ort_int4")
    check_batched_generation(backend, window[100:160].reshape(3, 20), 8)
    backend.close()


def test_threads_bytes_export_record_and_version(tiny_model_dir, tiny_tokenizer, cache_dir):
    backend = built(tiny_model_dir, cache_dir, "ort_int8")
    fields = backend.load(tiny_tokenizer)
    assert backend.set_threads(2) == {"intra_op_num_threads": 2}  # as ONNX Runtime's session traces it
    assert backend.set_threads(1) == {"intra_op_num_threads": 1}
    assert backend.version().startswith("onnxruntime-genai 0.18")
    assert "nodes_to_exclude=/lm_head/MatMul" in fields["onnx_builder_options"]
    assert fields["weight_bytes"] == backend.weight_bytes() <= fields["model_file_bytes"]
    layout = backend.layout
    embedding = layout.bytes["model.embed_tokens.weight"]  # untied: only looked up, one row per sequence
    rope = layout.bytes["cos_cache"] + layout.bytes["sin_cache"]
    step = backend.decode_bytes_per_step(3, 100)
    expected = backend.weight_bytes() - embedding - rope + 3 * embedding / len(tiny_tokenizer) + 3 * rope / 512
    assert step["weights"] == pytest.approx(expected)
    assert step["kv_cache"] == 3 * 100 * 2 * 2 * 2 * 16 * 4  # K and V, 2 layers, 2 KV heads of 16, float32
    assert step["total"] == step["weights"] + step["kv_cache"]
    again = built(tiny_model_dir, cache_dir, "ort_int8").load(tiny_tokenizer)  # the export is cached
    assert again["model_file"] == fields["model_file"] and again["convert_time_s"] == fields["convert_time_s"]
    backend.close()


def test_tied_head_counts_once_and_asymmetric_int4_load_failure_is_one_line(
    tied_model_dir, tiny_tokenizer, cache_dir, window
):
    from transformers import AutoModelForCausalLM

    backend = loaded(tied_model_dir, tiny_tokenizer, cache_dir)
    tied = AutoModelForCausalLM.from_pretrained(tied_model_dir, dtype=torch.float32).eval()
    assert (backend.log_probs(window) - torch_log_probs(tied, window)).abs().max() < 1e-5
    head = backend.layout.bytes["lm_head.MatMul.weight"]  # the embedding's only copy in the file
    rope = backend.layout.bytes["cos_cache"] + backend.layout.bytes["sin_cache"]
    step = backend.decode_bytes_per_step(3, 100)
    assert step["weights"] == pytest.approx(backend.weight_bytes() - rope + 3 * rope / 512)  # the head read whole
    assert backend.load(tiny_tokenizer)["folded_weight_bytes"] == head  # ONNX Runtime's transposed copy for Gather
    backend.close()
    # The builder writes an asymmetric int4 tied head, but ONNX Runtime rejects the graph when loading it.
    failing = built(tied_model_dir, cache_dir, "ort_int4", is_symmetric=False, quantize_lm_head=True)
    with pytest.raises(EvalbenchError, match=r"could not load the ort_int4 export in .*: .*Type Error") as error:
        failing.load(tiny_tokenizer)
    assert "\n" not in str(error.value)


def test_builder_failure_carries_the_builders_message(tiny_model_dir, tiny_tokenizer, cache_dir):
    backend = built(tiny_model_dir, cache_dir, "ort_int4", builder_options={"shared_embeddings": True})
    with pytest.raises(EvalbenchError, match=r"model builder could not export .* ValueError: shared_embeddings=true "):
        backend.load(tiny_tokenizer)
    with pytest.raises(EvalbenchError) as error:
        backend.load(tiny_tokenizer)  # nothing was cached: the builder runs again and fails the same way
    assert "\n" not in str(error.value) and "tie_word_embeddings=false" in str(error.value)
    assert not [p for p in (cache_dir / "ort_genai").iterdir() if p.name.startswith(".tmp-")]


def test_bad_settings_fail_in_one_line_with_the_valid_ones():
    with pytest.raises(PrecisionError, match=r"precision\.block_size=7 is invalid; valid: \[16, 32, 64, 128, 256\]"):
        OnnxPrecision("ort_int4", block_size=7)
    with pytest.raises(PrecisionError, match=r"precision\.accuracy_level=5 is invalid; valid: 1 \(fp32\)"):
        OnnxPrecision("ort_int8", accuracy_level=5)
    with pytest.raises(PrecisionError, match=r"precision\.name='fp32' is not an ONNX type; valid: \['ort_fp32'"):
        OnnxPrecision("fp32")
    with pytest.raises(PrecisionError, match=r"precision\.is_symmetric='no' is invalid; valid: true or false"):
        OnnxPrecision("ort_int4", is_symmetric="no")
    with pytest.raises(EvalbenchError, match=r"backend\.builder_options\.prune_lm_head is invalid"):
        OrtGenaiConfig(builder_options={"prune_lm_head": "true"})
    with pytest.raises(EvalbenchError, match=r"backend\.builder_options\.fuse_qkv='a b' is invalid"):
        OrtGenaiConfig(builder_options={"fuse_qkv": "a b"})


def test_precision_fields():
    int4 = OnnxPrecision("ort_int4", block_size=64, accuracy_level=4)
    assert (int4.weight_bits, int4.activations_quantized, int4.scheme) == (4, True, "matmulnbits_int4_block64")
    assert OnnxPrecision("ort_int8", accuracy_level=1).activations_quantized is False
    assert OnnxPrecision("ort_fp32").activations_quantized is False and OnnxPrecision("ort_fp32").weight_bits == 32
    described = int4.describe()
    assert described["block_size"] == 64 and described["accuracy_level"] == 4 and described["is_symmetric"] is True
    assert described["quantize_lm_head"] is False and described["skip_modules"] == ["lm_head"]
    assert "onnxruntime" in described["implementation"] and "MLAS" in described["implementation"]
    assert OnnxPrecision("ort_fp32").builder_options() == {}
    assert OnnxPrecision("ort_int4", quantize_lm_head=True).builder_options() == {
        "block_size": "32",
        "accuracy_level": "4",
        "is_symmetric": "true",
    }


# The model builder's architectures beyond Llama, as bf16 checkpoints (conftest's tiny shape): each exported at
# fp32 scores a WikiText-2 window as torch does at fp32 (the bf16 weights upcast by both).
ORT_ARCHITECTURES = {
    "mistral": {},
    "qwen2": {},
    "phi3": {"original_max_position_embeddings": 512},  # Phi-3-mini's RoPE (the builder's LongRoPE needs factors)
    "gemma2": {"sliding_window": 128, "query_pre_attn_scalar": 16},  # a window the scored 300 tokens exceed
}


@pytest.mark.parametrize("model_type", ORT_ARCHITECTURES)
def test_other_architectures_export_and_match_torch(model_type, spm_tokenizer_dir, spm_window, cache_dir, tmp_path):
    from conftest import tiny_checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_checkpoint(
        tmp_path / model_type, model_type, spm_tokenizer_dir, torch.bfloat16, **ORT_ARCHITECTURES[model_type]
    )
    backend = loaded(folder, AutoTokenizer.from_pretrained(folder), cache_dir)
    ours = backend.log_probs(spm_window)
    backend.close()
    reference = torch_log_probs(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), spm_window)
    assert (reference.max(-1).values - reference.min(-1).values).min() > 0.1  # the logits move
    assert (ours - reference).abs().max() < 1e-3
