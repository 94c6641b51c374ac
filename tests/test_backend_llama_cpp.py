"""The llama.cpp backend on a tiny Llama: GGUF conversion, log-probs against torch, batched greedy decoding.

Its checkpoint carries the sentencepiece tokenizer (``spm_llama_dir``): llama.cpp's converter takes that from any
model, but a BPE tokenizer.json only from models it knows, so it refuses ``tiny_model_dir``'s WikiText-trained BPE.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from conftest import check_batched_generation, train_bpe_tokenizer

pytest.importorskip("llama_cpp")

from evalbench.backends.llama_cpp import imatrix
from evalbench.backends.llama_cpp.backend import LlamaCppBackend
from evalbench.backends.llama_cpp.config import LlamaCppConfig
from evalbench.backends.llama_cpp.convert import CONVERTER_ENV, f32_from_gguf, prepared_gguf
from evalbench.backends.llama_cpp.precision import GGUF_TYPES, GGUFType
from evalbench.backends.torch.backend import forward_log_probs as torch_log_probs
from evalbench.calibration.base import ImportanceMatrix
from evalbench.config import ModelConfig
from evalbench.errors import EvalbenchError, PrecisionError

EXACT = {"kv_cache_type": "f32", "flash_attn": "off"}  # no f16 rounding of the KV cache
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("llama-cpp-cache")


def loaded(model_dir, tokenizer, cache_dir, precision: str = "f32", **config) -> LlamaCppBackend:
    backend = LlamaCppConfig(**config).build(
        GGUFType(precision), ModelConfig(name="tiny", path=str(model_dir)), cache_dir
    )
    assert isinstance(backend, LlamaCppBackend)
    backend.load(tokenizer)
    backend.set_threads(1)  # no spinning thread barriers on a busy shared machine
    return backend


@pytest.mark.parametrize(
    ("config", "tolerance"),
    [
        ({}, 1e-3),  # llama.cpp's defaults: f16 KV cache
        (EXACT, 1e-5),
        ({**EXACT, "n_ctx": 64, "n_batch": 32, "n_ubatch": 16}, 1e-5),  # several decode calls, the context grown
    ],
)
def test_f32_log_probs_match_torch(spm_llama_dir, spm_tokenizer, spm_llama, cache_dir, spm_window, config, tolerance):
    backend = loaded(spm_llama_dir, spm_tokenizer, cache_dir, **config)
    ours = backend.log_probs(spm_window)
    assert ours.shape == (len(spm_window), len(spm_tokenizer)) and ours.dtype == torch.float32
    assert (ours - torch_log_probs(spm_llama, spm_window)).abs().max() < tolerance
    assert torch.equal(backend.log_probs(spm_window), ours)  # a fresh sequence each call
    backend.close()


def test_tied_embeddings_write_no_output_tensor(spm_llama_dir, spm_tokenizer, tmp_path, spm_window):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    untied = AutoModelForCausalLM.from_pretrained(spm_llama_dir, dtype=torch.float32)
    config = untied.config
    config.tie_word_embeddings = True
    torch.manual_seed(1)
    folder = tmp_path / "tied"
    LlamaForCausalLM(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(spm_llama_dir / name, folder / name)
    tied = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    backend = loaded(folder, spm_tokenizer, tmp_path / "cache", **EXACT)
    assert "output.weight" not in backend.tensor_bytes
    assert (backend.log_probs(spm_window) - torch_log_probs(tied, spm_window)).abs().max() < 1e-5
    step = backend.decode_bytes_per_step(3, 100)
    assert step["weights"] == backend.weight_bytes()  # the embedding is read whole: it is the output projection
    backend.close()


def test_quantized_types_are_close_but_not_exact(spm_llama_dir, spm_tokenizer, cache_dir, spm_window):
    errors, sizes = {}, {}
    reference = None
    for name in ("f32", "q8_0", "q4_0"):
        backend = loaded(spm_llama_dir, spm_tokenizer, cache_dir, name, **EXACT)
        ours = backend.log_probs(spm_window)
        reference = ours if reference is None else reference
        errors[name] = (ours - reference).abs().mean().item()
        sizes[name] = backend.weight_bytes()
        backend.close()
    assert 0 < errors["q8_0"] < 0.01 and errors["q8_0"] < errors["q4_0"] < 0.1, errors
    assert sizes["q4_0"] < sizes["q8_0"] < sizes["f32"], sizes


def test_generate_batches_different_prompts(spm_llama_dir, spm_tokenizer, spm_llama, cache_dir, spm_window):
    backend = loaded(spm_llama_dir, spm_tokenizer, cache_dir, **EXACT)
    prompts = spm_window[:60].reshape(3, 20)
    together = check_batched_generation(backend, prompts, 12)
    for row in range(3):
        continued = torch.cat([prompts[row], together[row]])
        with torch.inference_mode():
            greedy = spm_llama(input_ids=continued[None]).logits[0, 19:-1].argmax(-1)
        assert torch.equal(greedy, together[row])  # each token is torch's argmax given the ones before
    backend.close()


def test_threads_bytes_and_version(spm_llama_dir, spm_tokenizer, cache_dir):
    backend = loaded(spm_llama_dir, spm_tokenizer, cache_dir)
    assert backend.set_threads(2) == {"n_threads": 2, "n_threads_batch": 2}
    assert backend.version().startswith("llama-cpp-python 0.")
    assert backend.config.describe()["backend.kv_cache_type"] == "f16"
    embedding = backend.tensor_bytes["token_embd.weight"]
    step = backend.decode_bytes_per_step(3, 100)
    assert step["weights"] == backend.weight_bytes() - embedding + 3 * embedding / len(spm_tokenizer)
    assert step["kv_cache"] == 3 * 100 * 2 * 2 * 2 * 16 * 2  # K and V, 2 layers, 2 KV heads of 16, f16
    assert step["total"] == step["weights"] + step["kv_cache"]
    backend.close()


@pytest.fixture(scope="module")
def head32_model_dir(spm_llama_dir, tmp_path_factory):
    """The tiny Llama with heads of 32 dimensions: llama.cpp's q8_0 and q4_0 blocks of 32 divide them."""
    from transformers import AutoConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-head32")
    for name in TOKENIZER_FILES:
        shutil.copy(spm_llama_dir / name, folder / name)
    config = AutoConfig.from_pretrained(spm_llama_dir)
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 2, 1, 32
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_a_quantized_kv_cache_is_smaller_and_scoring_goes_through_it(
    head32_model_dir, spm_tokenizer, cache_dir, spm_window
):
    """Scoring writes each window's K and V into the cache at its type and attends over it."""
    errors, kv_bytes = {}, {}
    reference = loaded(head32_model_dir, spm_tokenizer, cache_dir, **EXACT).log_probs(spm_window)
    for kv_type in ("f16", "q8_0", "q4_0"):
        backend = loaded(head32_model_dir, spm_tokenizer, cache_dir, kv_cache_type=kv_type, flash_attn="on")
        errors[kv_type] = float((backend.log_probs(spm_window) - reference).abs().max())
        kv_bytes[kv_type] = backend.decode_bytes_per_step(1, 100)["kv_cache"]
        backend.close()
    assert 0 < errors["f16"] < errors["q8_0"] < errors["q4_0"]
    per_token = 2 * 2 * 1 * 32  # K and V x 2 layers x 1 KV head of 32
    assert kv_bytes == {
        "f16": 100 * per_token * 2,
        "q8_0": 100 * per_token * 34 / 32,
        "q4_0": 100 * per_token * 18 / 32,
    }


def test_a_kv_cache_type_the_heads_do_not_fit_is_one_line_with_llama_cpps_reason(
    spm_llama_dir, spm_tokenizer, cache_dir
):
    with pytest.raises(EvalbenchError, match=r"kv_cache_type=q8_0\): .*block size 32 does not divide n_embd_head_k=16"):
        loaded(spm_llama_dir, spm_tokenizer, cache_dir, kv_cache_type="q8_0")


def test_read_into_memory_holds_the_weights_in_a_buffer_not_a_mapping(spm_llama_dir, spm_tokenizer, cache_dir):
    fields = {mode: loaded(spm_llama_dir, spm_tokenizer, cache_dir, load_mode=mode).load(spm_tokenizer)
              for mode in ("mmap", "read")}  # fmt: skip
    assert fields["mmap"]["mapped_weight_bytes"] > 0 and fields["mmap"]["read_weight_bytes"] == 0
    assert fields["read"]["mapped_weight_bytes"] == 0 and fields["read"]["read_weight_bytes"] > 0


def test_f32_from_gguf_dequantizes_and_keeps_metadata(spm_llama_dir, cache_dir, tmp_path):
    source, _ = prepared_gguf(ModelConfig(name="tiny", path=str(spm_llama_dir)), GGUFType("q8_0"), cache_dir)
    f32_from_gguf(source, tmp_path / "f32.gguf")
    quantized, written = gguf.GGUFReader(source), gguf.GGUFReader(tmp_path / "f32.gguf")
    assert written.get_field(gguf.Keys.General.FILE_TYPE).contents() == gguf.LlamaFileType.ALL_F32
    tokens = gguf.Keys.Tokenizer.LIST
    assert written.get_field(tokens).contents() == quantized.get_field(tokens).contents()
    for ours, theirs in zip(written.tensors, quantized.tensors, strict=True):
        assert ours.name == theirs.name and ours.tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(ours.data, gguf.quants.dequantize(theirs.data, theirs.tensor_type))


def test_wrong_precision_and_config_values_fail_with_the_valid_ones():
    with pytest.raises(PrecisionError, match="valid") as error:
        GGUFType(name="q3_x")
    assert all(name in str(error.value) for name in GGUF_TYPES)
    with pytest.raises(EvalbenchError, match=r"backend.kv_cache_type=q4 is invalid; valid: \['f32', 'f16', 'q8_0'"):
        LlamaCppConfig(kv_cache_type="q4")
    with pytest.raises(EvalbenchError, match=r"kv_cache_type=q8_0 needs flash attention .*valid: backend.flash_attn"):
        LlamaCppConfig(kv_cache_type="q8_0", flash_attn="off")
    with pytest.raises(EvalbenchError, match=r"backend.load_mode=lazy is invalid; valid: \['mmap', 'read', 'mlock'\]"):
        LlamaCppConfig(load_mode="lazy")
    with pytest.raises(EvalbenchError, match=r"backend\.n_ubatch=1024 is invalid"):
        LlamaCppConfig(n_batch=512, n_ubatch=1024)


def test_a_different_vocabulary_fails_in_one_line(spm_llama_dir, spm_tokenizer, cache_dir, tmp_path):
    from transformers import PreTrainedTokenizerFast

    spec = json.loads((spm_llama_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    first, second = (text for text, i in vocab.items() if i in (34, 68))  # ids the backend compares
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    swapped = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    backend = LlamaCppBackend(
        LlamaCppConfig(), GGUFType("f32"), ModelConfig(name="tiny", path=str(spm_llama_dir)), cache_dir
    )
    with pytest.raises(EvalbenchError, match=r"token 34 is .* in the GGUF but .* in the model's tokenizer") as error:
        backend.load(swapped)
    assert "\n" not in str(error.value)
    backend.close()


def test_a_tokenizer_the_converter_does_not_know_is_refused_in_one_line_with_its_reason(
    tiny_model_dir, wikitext, tmp_path
):
    """A byte-level BPE trained on WikiText-2 is no model's the converter knows (it recognises BPEs by their ids)."""
    folder = tmp_path / "bpe-llama"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens_map.json"))
    tokenizer = train_bpe_tokenizer(wikitext, folder)
    backend = LlamaCppBackend(LlamaCppConfig(), GGUFType("q8_0"), ModelConfig(name="t", path=str(folder)), tmp_path)
    with pytest.raises(EvalbenchError) as error:
        backend.load(tokenizer)
    assert str(error.value).startswith(
        f"llama.cpp's convert_hf_to_gguf.py cannot convert {folder}: NotImplementedError: "
        "BPE pre-tokenizer was not recognized - update get_vocab_base_pre(); valid: "
    )
    assert "backend.gguf_file=" in str(error.value) and "\n" not in str(error.value)
    assert not list((tmp_path / "llama_cpp").glob("*/*.gguf"))  # nothing half-written is left


def test_a_missing_converter_says_how_to_get_it(spm_llama_dir, spm_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv(CONVERTER_ENV, str(tmp_path / "llama.cpp"))
    backend = LlamaCppBackend(
        LlamaCppConfig(), GGUFType("f32"), ModelConfig(name="t", path=str(spm_llama_dir)), tmp_path
    )
    with pytest.raises(
        EvalbenchError, match=r"llama.cpp's converter is not in .*llama.cpp .*run `make setup`"
    ) as error:
        backend.load(spm_tokenizer)
    assert CONVERTER_ENV in str(error.value) and "\n" not in str(error.value)


def test_importance_matrix_is_each_weights_mean_squared_input_as_torch_computes_it(
    spm_llama_dir, spm_tokenizer, spm_llama, cache_dir, spm_window
):
    """llama.cpp's own forward pass, seen through the eval callback, gives each blk.* weight the mean of its input's
    squares per column: the numbers torch's hooks give for the same layers on the same tokens."""
    calibration = ImportanceMatrix(samples=2, sequence_length=64)
    calibration.set_tokens(spm_window[:128], overlaps_scored=False)
    model_file, fields = prepared_gguf(
        ModelConfig(name="tiny", path=str(spm_llama_dir)), GGUFType("q4_k_m"), cache_dir, calibration=calibration
    )
    matrix = imatrix.load(Path(fields["imatrix_file"]))
    assert len(matrix) == 2 * 7  # q, k, v, output, gate, up, down of 2 layers; not the output head
    inputs: dict[str, list[torch.Tensor]] = {}
    names = {"self_attn.q_proj": "attn_q", "self_attn.o_proj": "attn_output", "mlp.down_proj": "ffn_down"}
    hooks = []
    for name, module in spm_llama.named_modules():
        for suffix, short in names.items():
            if name.endswith(suffix):
                key = f"blk.{name.split('.')[2]}.{short}.weight"
                hooks.append(module.register_forward_pre_hook(lambda _, args, key=key: inputs[key].append(args[0][0])))
                inputs[key] = []
    with torch.inference_mode():
        for window in calibration.windows:
            spm_llama(input_ids=window[None])
    for hook in hooks:
        hook.remove()
    assert len(inputs) == 6 and all(len(seen) == 2 for seen in inputs.values())
    for key, seen in inputs.items():
        expected = torch.cat(seen).double().square().mean(0).numpy()
        assert np.allclose(matrix[key], expected, rtol=2e-3, atol=1e-7), key
    plain, _ = prepared_gguf(ModelConfig(name="tiny", path=str(spm_llama_dir)), GGUFType("q4_k_m"), cache_dir)
    assert model_file != plain and model_file.read_bytes() != plain.read_bytes()  # the rounding weighed otherwise
    assert fields["calibration_time_s"] > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["precision=f16", "calibration=imatrix"],
            "calibration=imatrix weighs the rounding of quantized GGUF types, and precision=f16 rounds nothing; "
            "valid: a quantized type",
        ),
        (
            ["precision=int4", "calibration=awq"],
            "calibration=awq is not offered by backend=torch; valid: calibration=none, or backend=llama_cpp "
            "(imatrix), backend=openvino (awq, gptq)",
        ),
        (
            ["precision=ov_int8", "calibration=gptq"],
            "calibration=gptq chooses NNCF's int4 weights, not precision=ov_int8's; valid: precision=ov_int4, or "
            "calibration=none",
        ),
    ],
)
def test_calibration_is_refused_where_it_does_not_apply(overrides, message):
    from hydra import compose, initialize_config_dir

    from evalbench.config import CONFIG_DIR
    from evalbench.configuration import check_configuration

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with pytest.raises(EvalbenchError) as error:
        check_configuration(cfg)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_refused_calibration_is_one_line_and_exit_1_on_the_command_line(tmp_path, tiny_args):
    from conftest import evalbench

    out = evalbench(*tiny_args, "precision=int4", "calibration=imatrix", cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert "calibration=imatrix is not offered by backend=torch" in out.stdout + out.stderr
