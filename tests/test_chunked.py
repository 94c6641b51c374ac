"""Log-probabilities a chunk of positions at a time: the same numbers as the whole window, within the budget."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig

from evalbench.backends.ort_genai.config import OrtGenaiConfig
from evalbench.backends.torch.backend import forward_log_probs, forward_logits
from evalbench.backends.torch.config import TorchConfig
from evalbench.backends.torch.precision.bf16 import BF16
from evalbench.backends.torch.precision.fp32 import FP32
from evalbench.backends.torch.precision.int4 import Int4WeightOnly
from evalbench.backends.torch.precision.int8 import Int8WeightOnly
from evalbench.backends.torch.precision.int8_dynamic import Int8Dynamic
from evalbench.metrics import chunked, divergence, memory_estimate
from evalbench.metrics.perplexity import ScoredText, window_spans
from evalbench.pruning.base import Pruning
from evalbench.quality import scoring

VOCAB = 6000
ROWS = 5
BUDGET = ROWS * chunked.SCRATCH_BYTES_PER_VALUE * VOCAB  # five positions a chunk


class FakeModel:
    """Logits of a window: a random projection of the running mean of its token embeddings (context matters)."""

    def __init__(self, seed: int, dtype: torch.dtype = torch.float32) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.embed = torch.randn(VOCAB, 16, generator=generator)
        self.head = 2 * torch.randn(16, VOCAB, generator=generator)
        self.dtype, self.calls = dtype, []

    def __call__(self, window: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(window))
        hidden = self.embed[window].cumsum(0) / torch.arange(1, len(window) + 1)[:, None]
        return (hidden @ self.head).to(self.dtype)


def _plan(budget: int | None = None) -> scoring.ScoringPlan:
    ids = torch.randint(VOCAB, (200,), generator=torch.Generator().manual_seed(7))
    scored = ScoredText(ids, "some words the scored tokens cover")
    return scoring.ScoringPlan(scored, 64, 48, "key", False, None, None, False, 8, 4, budget)


def test_the_chunk_comes_from_the_budget():
    assert chunked.rows_per_chunk(VOCAB, BUDGET) == ROWS
    assert chunked.rows_per_chunk(VOCAB, BUDGET - 1) == ROWS - 1
    assert chunked.rows_per_chunk(10**9, BUDGET) == 1  # never none
    assert chunked.rows_per_chunk(262_144) == 51  # Gemma, under the default 256 MiB
    assert chunked.row_chunks(12, 5) == [slice(0, 5), slice(5, 10), slice(10, 12)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_log_softmax_is_the_whole_windows(dtype):
    logits = (4 * torch.randn(37, VOCAB, generator=torch.Generator().manual_seed(0))).to(dtype)
    parts = list(chunked.log_softmax_chunks(logits, BUDGET))
    assert [rows for rows, _ in parts] == chunked.row_chunks(37, ROWS) and len(parts) == 8
    assert all(log_probs.dtype == torch.float32 and log_probs.shape[0] <= ROWS for _, log_probs in parts)
    whole = torch.log_softmax(logits.float(), dim=-1)
    assert (chunked.log_softmax(logits, BUDGET) - whole).abs().max() < 1e-6
    assert (torch.cat([log_probs for _, log_probs in parts]) - whole).abs().max() < 1e-6


def test_exact_kld_in_chunks_is_the_whole_windows(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    reference, model = (torch.log_softmax(torch.randn(23, VOCAB, generator=generator), -1) for _ in range(2))
    whole = (reference.double().exp() * (reference.double() - model.double())).sum(-1)
    monkeypatch.setattr(chunked, "BUDGET_BYTES", BUDGET)
    assert chunked.rows_per_chunk(VOCAB) == ROWS
    assert (divergence.exact_kld(reference, model) - whole).abs().max() < 1e-9


def test_chunked_scoring_gives_the_unchunked_numbers():
    plan, small = _plan(), _plan(BUDGET)
    assert chunked.rows_per_chunk(VOCAB, plan.budget) > 64  # the whole window in one chunk
    _, whole_reference = scoring._score(FakeModel(0), plan, None, build=True)
    _, chunked_reference = scoring._score(FakeModel(0), small, None, build=True)
    for name in ("top_ids", "top_log_probs", "tail_log_mass", "target_log_probs", "tail_log_probs"):
        difference = getattr(chunked_reference, name).double() - getattr(whole_reference, name).double()
        assert difference.abs().max() < 1e-6, name
    assert torch.equal(chunked_reference.tail_ids, whole_reference.tail_ids)  # the same draws, chunk by chunk
    whole, _ = scoring._score(FakeModel(1), plan, whole_reference, build=False)
    in_chunks, _ = scoring._score(FakeModel(1), small, whole_reference, build=False)
    assert whole["kld_mean"] > 0.1 and in_chunks.keys() == whole.keys()
    for key, value in whole.items():
        assert in_chunks[key] == (pytest.approx(value, rel=1e-6, abs=1e-9) if isinstance(value, float) else value), key


def test_no_step_holds_more_than_one_chunk_of_the_window(monkeypatch):
    seen: dict[str, list[tuple[int, ...]]] = {"log_softmax": [], "tail": []}
    chunk_log_probs, tail = chunked.chunk_log_probs, divergence._tail

    def spy_chunk(logits: torch.Tensor) -> torch.Tensor:
        seen["log_softmax"].append(tuple(logits.shape))
        return chunk_log_probs(logits)

    def spy_tail(log_probs: torch.Tensor, *args, **kwargs):
        seen["tail"].append(tuple(log_probs.shape))
        return tail(log_probs, *args, **kwargs)

    monkeypatch.setattr(chunked, "chunk_log_probs", spy_chunk)
    monkeypatch.setattr(divergence, "_tail", spy_tail)
    plan, model = _plan(BUDGET), FakeModel(0, torch.bfloat16)
    scoring._score(model, plan, None, build=True)
    spans = window_spans(200, 64, 48)
    assert model.calls == [end - begin for begin, end, _ in spans]  # the backend: once per window
    scored = [end - first for _, end, first in spans]
    expected = [(min(ROWS, m - start), VOCAB) for m in scored for start in range(0, m, ROWS)]
    assert seen["log_softmax"] == expected and len(expected) == sum(math.ceil(m / ROWS) for m in scored)
    assert seen["tail"] == [shape for shape in expected for _ in range(2)]  # building the reference, comparing
    assert max(rows for rows, _ in seen["tail"]) * VOCAB * chunked.SCRATCH_BYTES_PER_VALUE <= BUDGET
    scoring._score(model, replace(plan, budget=None), None, build=True)
    assert seen["log_softmax"][len(expected) :] == [(m, VOCAB) for m in scored]  # the default budget: a window


def test_the_memory_estimate_counts_the_backends_logits_and_one_chunk():
    config = LlamaConfig(vocab_size=262_144, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    shape = memory_estimate.ModelShape.of(config, torch.bfloat16, gguf_source=False)
    needed = TorchConfig().memory_needed(BF16(), shape, memory_estimate.Workload(1, 0, 2048), Pruning())
    assert needed.parts["logits"] == 2048 * 262_144 * 2 + 51 * 262_144 * chunked.SCRATCH_BYTES_PER_VALUE
    assert needed.parts["logits"] < 1.3 * 2**30  # three float32 copies of the window were 6 GiB
    short = TorchConfig().memory_needed(FP32(), shape, memory_estimate.Workload(1, 0, 8), Pruning())
    assert short.parts["logits"] == 8 * 262_144 * (4 + chunked.SCRATCH_BYTES_PER_VALUE)  # shorter than a chunk


def test_each_backend_says_how_it_holds_a_windows_logits(tiny_model):
    precisions = (FP32(), BF16(), Int8WeightOnly(), Int4WeightOnly(), Int8Dynamic())
    assert [TorchConfig().logits_bytes(precision) for precision in precisions] == [4, 2, 2, 2, 4]
    assert OrtGenaiConfig().logits_bytes(FP32()) == 4
    window = torch.arange(40)
    logits = forward_logits(tiny_model, window)
    assert logits.dtype == torch.float32 and logits.shape == (40, tiny_model.config.vocab_size)
    assert torch.equal(forward_log_probs(tiny_model, window), torch.log_softmax(logits, dim=-1))
    assert forward_logits(tiny_model.to(torch.bfloat16), window).dtype == torch.bfloat16  # its own dtype


def test_tasks_log_softmax_only_the_continuations_rows():
    from evalbench.quality.lm_eval_model import BackendLM

    model = FakeModel(0)
    lm = BackendLM(SimpleNamespace(logits=model), tokenizer=None)
    total, greedy = lm._continuation_log_prob([1, 2, 3, 4], [5, 6])
    rows = torch.log_softmax(FakeModel(0)(torch.tensor([1, 2, 3, 4, 5])), dim=-1)[-2:]
    assert model.calls == [5] and total == pytest.approx(float(rows[0, 5] + rows[1, 6]), rel=1e-6)
    assert greedy == bool(rows[0].argmax() == 5 and rows[1].argmax() == 6)
