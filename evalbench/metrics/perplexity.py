"""Sliding-window perplexity, with lm-evaluation-harness's tokenizer-independent companions.

The corpus is tokenized once and cut to its first ``max_tokens`` tokens, so every
precision scores exactly the same tokens. Windows of ``context`` tokens advance by
``stride``; each window scores only the tokens the previous window did not, with the
tokens before them as context (the method of the Hugging Face perplexity guide).
A token with no context before it in its window (the first token, and every
window's first token when ``stride == context``) is not scored.

``bits_per_byte`` and ``word_perplexity`` follow lm-evaluation-harness: the summed
negative log-likelihood (nats) over the UTF-8 bytes (divided by ln 2) and over the
whitespace-separated words of the text the scored tokens cover.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from evalbench.errors import EvalbenchError


@dataclass(frozen=True)
class ScoredText:
    """Token ids to score and the text they cover."""

    input_ids: torch.Tensor  # shape [n_tokens], int64
    text: str  # the text from the first scored token to the last

    @property
    def token_hash(self) -> str:
        """A fingerprint of the scored token ids, equal across precisions by construction."""
        return hashlib.sha256(self.input_ids.numpy().tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    bits_per_byte: float
    word_perplexity: float
    nll_sum: float
    eval_tokens: int
    eval_bytes: int
    eval_words: int
    eval_token_hash: str
    windows: int

    def to_record(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Corpus:
    """A text and its tokens (no special tokens), with each token's character span."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]


def tokenize(text: str, tokenizer) -> Corpus:
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return Corpus(text, encoding["input_ids"], encoding["offset_mapping"])


def scored_text(corpus: Corpus, max_tokens: int | None) -> ScoredText:
    """The first ``max_tokens`` tokens of ``corpus`` (all of them when 0 or None)."""
    end = min(max_tokens, len(corpus.ids)) if max_tokens else len(corpus.ids)
    if end < 2:
        raise EvalbenchError(f"perplexity needs at least 2 tokens, the text gives {end}")
    span = corpus.text[corpus.offsets[1][0] : corpus.offsets[end - 1][1]]
    return ScoredText(torch.tensor(corpus.ids[:end], dtype=torch.long), span)


def window_spans(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first_scored)`` for each window over ``n_tokens`` tokens."""
    if not 0 < stride <= context:
        raise EvalbenchError(f"perplexity.stride={stride} must be in 1..perplexity.context ({context})")
    spans, scored_up_to = [], 1
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        spans.append((begin, end, max(scored_up_to, begin + 1)))
        scored_up_to = end
        if end == n_tokens:
            break
    return spans


def window_log_probs(
    model: nn.Module, scored: ScoredText, context: int, stride: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per window: next-token log-probabilities ``[m, vocab]`` (float32) and the ``m`` tokens they score."""
    for begin, end, first_scored in window_spans(scored.input_ids.numel(), context, stride):
        window = scored.input_ids[begin:end].unsqueeze(0)
        with torch.inference_mode():
            logits = model(input_ids=window, use_cache=False).logits[0].float()
        predicting = slice(first_scored - begin - 1, end - begin - 1)  # logits at t predict token t+1
        yield torch.log_softmax(logits[predicting], dim=-1), scored.input_ids[first_scored:end]


def target_nlls(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (nats, float64) of each target under its row of ``log_probs``."""
    return -log_probs.gather(1, targets[:, None])[:, 0].double()


def token_nlls(model: nn.Module, scored: ScoredText, context: int, stride: int) -> torch.Tensor:
    """Negative log-likelihood (nats, float64) of every scored token, in order."""
    return torch.cat([target_nlls(lp, targets) for lp, targets in window_log_probs(model, scored, context, stride)])


def perplexity(model: nn.Module, scored: ScoredText, context: int, stride: int) -> PerplexityResult:
    """Score ``scored`` with ``model`` and return token perplexity, bits per byte and word perplexity."""
    return summarize(token_nlls(model, scored, context, stride), scored, context, stride)


def summarize(nlls: torch.Tensor, scored: ScoredText, context: int, stride: int) -> PerplexityResult:
    """Token perplexity, bits per byte and word perplexity from the scored tokens' NLLs."""
    nll_sum = float(nlls.sum())
    n_bytes = len(scored.text.encode("utf-8"))
    n_words = len(re.split(r"\s+", scored.text.strip()))
    return PerplexityResult(
        perplexity=math.exp(nll_sum / nlls.numel()),
        bits_per_byte=nll_sum / n_bytes / math.log(2),
        word_perplexity=math.exp(nll_sum / n_words),
        nll_sum=nll_sum,
        eval_tokens=int(nlls.numel()),
        eval_bytes=n_bytes,
        eval_words=n_words,
        eval_token_hash=scored.token_hash,
        windows=len(window_spans(scored.input_ids.numel(), context, stride)),
    )
