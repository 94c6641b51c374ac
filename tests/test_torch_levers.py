"""The torch backend's levers on the tiny Llama: compiled decoding, no KV cache, load modes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evalbench.backends.torch.backend import TorchBackend, forward_log_probs
from evalbench.backends.torch.config import TorchConfig
from evalbench.backends.torch.precision.fp32 import FP32
from evalbench.config import ModelConfig
from evalbench.errors import EvalbenchError

COMPILED_GREEDY_TOKENS = """
import json, sys, torch
from pathlib import Path
from transformers import AutoTokenizer
from evalbench.backends.torch.config import TorchConfig
from evalbench.config import ModelConfig
from evalbench.backends.torch.precision.fp32 import FP32
model_dir, cache_dir = sys.argv[1], Path(sys.argv[2])
backend = TorchConfig(compile=True).build(FP32(), ModelConfig(name="tiny", path=model_dir), cache_dir)
backend.load(AutoTokenizer.from_pretrained(model_dir))
backend.set_threads(1)
prompts = torch.tensor(json.loads(sys.argv[3]))
fields = backend.prepare_generation(prompts, 6, True)
out = backend.model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False, max_new_tokens=6,
                             min_new_tokens=6, **backend.options)
steps = len(backend.generate(prompts, 6).step_latencies_s)
print(json.dumps({**fields, "tokens": out[:, 8:].tolist(), "steps": steps}))
"""


PROMPTS = [[5, 9, 30, 7, 11, 2, 90, 41], [3, 3, 8, 100, 64, 12, 6, 5]]


def _greedy(model_dir: Path, cache_dir: Path) -> dict:
    """Compiled greedy tokens and compile fields from a fresh process (clean compiler state)."""
    out = subprocess.run(
        [sys.executable, "-c", COMPILED_GREEDY_TOKENS, str(model_dir), str(cache_dir), json.dumps(PROMPTS)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_compiled_decoding_matches_eager_and_is_cached_on_disk(tiny_model, tiny_model_dir, tmp_path):
    prompts = torch.tensor(PROMPTS)
    with torch.inference_mode():
        tokens = tiny_model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                                     max_new_tokens=6, min_new_tokens=6)  # fmt: skip
    eager = {"tokens": tokens[:, 8:].tolist()}
    first = _greedy(tiny_model_dir, tmp_path)
    again = _greedy(tiny_model_dir, tmp_path)  # a new process, same cache_dir
    assert first["tokens"] == eager["tokens"] and again["tokens"] == eager["tokens"]
    assert first["steps"] == again["steps"] == 5
    assert first["compile_graphs"] >= 1 and first["compile_fx_graph_cache_misses"] >= 1
    assert again["compile_fx_graph_cache_hits"] >= 1 and again["compile_fx_graph_cache_misses"] == 0
    assert any((tmp_path / "inductor").rglob("*")), "no compiled artefact on disk"


def _backend(model_dir: Path, tokenizer, cache_dir: Path, **config) -> TorchBackend:
    backend = TorchConfig(**config).build(FP32(), ModelConfig(name="tiny", path=str(model_dir)), cache_dir)
    backend.load(tokenizer)
    backend.set_threads(1)
    return backend


def test_without_kv_cache_greedy_tokens_are_the_same(tiny_model_dir, tiny_tokenizer, tmp_path):
    backend = _backend(tiny_model_dir, tiny_tokenizer, tmp_path)
    prompts = torch.tensor([[5, 9, 30, 7, 11, 2, 90, 41]])
    runs = {}
    for kv_cache in (True, False):
        backend.prepare_generation(prompts, 8, kv_cache)
        kwargs = {"do_sample": False, "max_new_tokens": 8, "min_new_tokens": 8, **backend.options}
        runs[kv_cache] = backend.model.generate(prompts, attention_mask=torch.ones_like(prompts), **kwargs)
        assert len(backend.generate(prompts, 8).step_latencies_s) == 7
    assert backend.options == {"use_cache": False}
    assert torch.equal(runs[True], runs[False])


def test_read_and_mapped_loading_give_the_same_model(tiny_model_dir, tiny_tokenizer, tmp_path, window):
    mapped = _backend(tiny_model_dir, tiny_tokenizer, tmp_path)
    read = _backend(tiny_model_dir, tiny_tokenizer, tmp_path, load_mode="read")
    assert torch.equal(forward_log_probs(mapped.model, window), forward_log_probs(read.model, window))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"compile_mode": "reduce-overhead"}, r"backend.compile_mode=reduce-overhead is invalid; valid: \['default'"),
        ({"load_mode": "lazy"}, r"backend.load_mode=lazy is invalid; valid: \['mmap', 'read'\]"),
    ],
)
def test_bad_torch_settings_are_one_line(config, message):
    with pytest.raises(EvalbenchError, match=message):
        TorchConfig(**config)
