"""Tiny random bf16 checkpoints of the architectures llama.cpp's converter takes with a tokenizer made offline.

Each is converted by evalbench's llama.cpp path (``convert_hf_to_gguf.py`` at bf16, then F32 by
``llama_model_quantize``) and scored on a WikiText-2 window next to torch at fp32 (the bf16
weights upcast). Architectures that read a sentencepiece ``tokenizer.model`` get the one trained
here; those that read only a BPE ``tokenizer.json`` get SmolLM2's, the one such tokenizer at hand
offline whose ids the converter recognises. Checkpoints the converter refuses fail in one line
with its reason; those llama.cpp runs unlike torch (DISAGREE) are kept in view.
"""

from __future__ import annotations

import os

import gguf
import pytest
import torch
from conftest import tiny_checkpoint

pytest.importorskip("llama_cpp")

from evalbench.backends.llama_cpp.backend import LlamaCppBackend
from evalbench.backends.llama_cpp.config import LlamaCppConfig
from evalbench.backends.llama_cpp.precision import GGUFType
from evalbench.backends.torch.backend import forward_log_probs as torch_log_probs
from evalbench.config import ModelConfig
from evalbench.errors import EvalbenchError

SPM, BPE = "spm_tokenizer_dir", "bpe_tokenizer_dir"  # the tokenizer fixtures
# Largest |llama.cpp - torch| log-prob allowed: float32 rounding, MoE routing and SSM scans add a
# little; ggml's CPU GELU reads a float16 table (input and output rounded to float16), so GELU models more.
EXACT, ROUTED, GELU = 2e-4, 1e-3, 1e-2
MOE = {"num_experts": 4, "num_experts_per_tok": 2}
ARCHITECTURES = {  # model_type -> (tokenizer, config beyond conftest's TINY_SHAPE, tolerance)
    "llama": (SPM, {}, EXACT),
    "mistral": (SPM, {}, EXACT),
    "mixtral": (SPM, {"num_local_experts": 4, "num_experts_per_tok": 2}, ROUTED),
    "qwen2": (SPM, {}, EXACT),
    "qwen3": (SPM, {}, EXACT),
    "gemma": (SPM, {}, GELU),
    "gemma2": (SPM, {"sliding_window": 128, "query_pre_attn_scalar": 16}, GELU),  # windowed: shorter than the text
    "gemma3_text": (SPM, {"sliding_window": 128, "query_pre_attn_scalar": 16}, GELU),
    "phi3": (SPM, {}, EXACT),
    "granite": (SPM, {"embedding_multiplier": 2.0, "residual_multiplier": 0.5, "logits_scaling": 2.0}, EXACT),
    "granitemoe": (SPM, {"num_local_experts": 4, "num_experts_per_tok": 2}, ROUTED),
    "granitemoeshared": (SPM, {"num_local_experts": 4, "num_experts_per_tok": 2}, ROUTED),
    "nemotron": (SPM, {}, EXACT),
    "smollm3": (SPM, {}, EXACT),
    "arcee": (SPM, {}, EXACT),
    "apertus": (SPM, {}, EXACT),
    "ernie4_5": (SPM, {}, EXACT),
    "ernie4_5_moe": (SPM, {"moe_num_experts": 4, "moe_k": 2, "moe_intermediate_size": 32}, ROUTED),
    "jamba": (SPM, {"num_experts": 2, "attn_layer_period": 2, "attn_layer_offset": 1, "mamba_d_state": 16}, ROUTED),
    "qwen2_moe": (BPE, {**MOE, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64}, ROUTED),
    "qwen3_moe": (BPE, {**MOE, "moe_intermediate_size": 32, "norm_topk_prob": True}, ROUTED),  # as llama.cpp does
    "olmo": (BPE, {}, EXACT),
    "olmo2": (BPE, {}, EXACT),
    "olmo3": (BPE, {}, EXACT),
    "olmoe": (BPE, {**MOE, "num_key_value_heads": 4}, ROUTED),  # llama.cpp's OLMoE norms q and k over all heads
    "stablelm": (BPE, {}, EXACT),
    "starcoder2": (BPE, {}, GELU),
    "cohere": (BPE, {"logit_scale": 1.0}, EXACT),
    "exaone": (BPE, {}, EXACT),
    "exaone4": (BPE, {}, EXACT),
    "hunyuan_v1_dense": (BPE, {}, EXACT),
    "seed_oss": (BPE, {}, EXACT),
    "bloom": (BPE, {}, GELU),
    "falcon": (BPE, {"head_dim": None, "new_decoder_architecture": True, "num_kv_heads": 2}, GELU),
    "falcon_h1": (BPE, {}, ROUTED),
    "lfm2": (BPE, {"layer_types": ["conv", "full_attention"]}, EXACT),  # without attention llama.cpp aborts
}
DISAGREE = {  # llama.cpp runs these unlike torch: name -> (model_type, tokenizer, config)
    # the converter writes no sliding window for the Llama architecture: llama.cpp attends to every token
    "mistral-sliding-window": ("mistral", SPM, {"sliding_window": 128}),
    "gpt_oss": ("gpt_oss", BPE, {"num_local_experts": 4}),  # a bf16 (not MXFP4) checkpoint; cause not isolated
}
REFUSED = {  # model_type -> (tokenizer, the converter's reason)
    "opt": (SPM, "Model OPTForCausalLM is not supported"),
    "olmo2": (SPM, "NotImplementedError: BPE pre-tokenizer was not recognized - update get_vocab_base_pre()"),
    "gpt_neox": (BPE, "KeyError: 'rotary_pct'"),  # a transformers 4 config key, gone in 5
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("architectures-cache")


def scored(folder, tokenizer, window, cache_dir) -> tuple[torch.Tensor, dict]:
    """llama.cpp f32 log-probs of ``window`` (f32 KV cache, no flash attention) and the load's record fields."""
    backend = LlamaCppBackend(
        LlamaCppConfig(kv_cache_type="f32", flash_attn="off"),
        GGUFType("f32"),
        ModelConfig(name=folder.name, path=str(folder)),
        cache_dir,
    )
    fields = backend.load(tokenizer)
    backend.set_threads(1)
    log_probs = backend.log_probs(window)
    backend.close()
    return log_probs, fields


def compared(model_type, tokenizer_dir, overrides, wikitext, cache_dir, tmp_path) -> tuple[torch.Tensor, ...]:
    """llama.cpp f32 and torch fp32 log-probs of a WikiText-2 window by a tiny bf16 ``model_type``; record fields."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = {"initializer_range": 0.2, **overrides}  # weights large enough that every layer moves the logits
    folder = tiny_checkpoint(tmp_path / model_type, model_type, tokenizer_dir, torch.bfloat16, **config)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    window = torch.tensor(tokenizer(wikitext[:20_000], add_special_tokens=False)["input_ids"][:300])
    ours, fields = scored(folder, tokenizer, window, cache_dir)
    reference = torch_log_probs(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), window)
    assert (reference.max(-1).values - reference.min(-1).values).min() > 1  # not a near-uniform guess
    return ours, reference, fields


# The default suite: each tokenizer kind, dense, windowed, GELU and MoE; EVALBENCH_ALL_ARCHITECTURES=1 (make
# test-architectures) runs every architecture above (about 7 minutes on 2 cores).
CORE = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma2", "phi3", "olmo2")
ALL = os.environ.get("EVALBENCH_ALL_ARCHITECTURES") == "1"


def _selected(model_type: str) -> object:
    reason = "not in the core set; EVALBENCH_ALL_ARCHITECTURES=1 runs it"
    return pytest.param(model_type, marks=pytest.mark.skipif(not ALL and model_type not in CORE, reason=reason))


@pytest.mark.parametrize("model_type", [_selected(name) for name in ARCHITECTURES])
def test_llama_cpp_f32_of_a_bf16_checkpoint_matches_torch_fp32(model_type, request, wikitext, cache_dir, tmp_path):
    tokenizer_fixture, overrides, tolerance = ARCHITECTURES[model_type]
    tokenizer_dir = request.getfixturevalue(tokenizer_fixture)
    ours, reference, fields = compared(model_type, tokenizer_dir, overrides, wikitext, cache_dir, tmp_path)
    assert (ours - reference).abs().max() < tolerance
    assert fields["gguf_base_type"] == "bf16" and fields["gguf_converter"].startswith("convert_hf_to_gguf.py (")
    types = {t.tensor_type for t in gguf.GGUFReader(fields["model_file"]).tensors}
    assert types == {gguf.GGMLQuantizationType.F32}  # every bf16 tensor upcast


@pytest.mark.parametrize("name", DISAGREE)
def test_architectures_llama_cpp_runs_unlike_torch_stay_known(name, request, wikitext, cache_dir, tmp_path):
    """When one of these starts to agree, move it to ARCHITECTURES."""
    model_type, tokenizer_fixture, overrides = DISAGREE[name]
    ours, reference, _ = compared(
        model_type, request.getfixturevalue(tokenizer_fixture), overrides, wikitext, cache_dir, tmp_path
    )
    assert (ours - reference).abs().max() > 1


@pytest.mark.parametrize("model_type", REFUSED)
def test_a_checkpoint_the_converter_refuses_fails_in_one_line_with_its_reason(model_type, request, cache_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer_fixture, reason = REFUSED[model_type]
    tokenizer_dir = request.getfixturevalue(tokenizer_fixture)
    folder = tiny_checkpoint(tmp_path / model_type, model_type, tokenizer_dir, torch.bfloat16)
    with pytest.raises(EvalbenchError) as error:
        scored(folder, AutoTokenizer.from_pretrained(tokenizer_dir), torch.zeros(4, dtype=torch.long), cache_dir)
    message = str(error.value)
    assert message.startswith(f"llama.cpp's convert_hf_to_gguf.py cannot convert {folder}: {reason}; valid: ")
    assert "\n" not in message
